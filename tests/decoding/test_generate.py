"""The engine: greedy matches teacher forcing, ragged batches, sampling filters, stops, errors."""

import pytest
import torch

import seqlab
from seqlab.config import ConfigError
from seqlab.decoding import PromptError, generate
from seqlab.decoding.sampling import SamplingConfig, filter_logits

PATTERNS = {"attention": ["attention", "attention"], "recurrent": ["mamba", "gru"],
            "hybrid": ["attention", "mamba", "s4d"]}


def model_of(layers, **kw):
    torch.manual_seed(0)
    m = seqlab.models.build_lm(vocab_size=40, dim=32, layers=layers,
                               mixer_options={n: seqlab.mixers.get(n).example_options for n in set(layers)},
                               **kw).double()
    with torch.no_grad():
        m.embed.weight.mul_(20)  # peaked distributions: the greedy path is far from ties
    return m


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_greedy_equals_teacher_forced_argmax(pattern):
    m = model_of(PATTERNS[pattern])
    prompt = torch.randint(0, 40, (2, 7))
    out = generate(m, prompt, "greedy", max_new_tokens=10)
    full = torch.cat([prompt, torch.tensor(out.tokens)], 1)
    logits, _ = m(full)
    torch.testing.assert_close(torch.tensor(out.tokens), logits[:, 6:-1].argmax(-1), rtol=0, atol=0)
    assert out.stats.target_calls == 1 + 9 and out.stats.new_tokens == 20


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_ragged_batch_equals_separate_runs(pattern):
    m = model_of(PATTERNS[pattern])
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10]]
    batch = generate(m, prompts, "greedy", max_new_tokens=8).tokens
    alone = [generate(m, [p], "greedy", max_new_tokens=8).tokens[0] for p in prompts]
    assert batch == alone


def test_sampling_is_seeded_and_follows_the_distribution():
    m = model_of(["gru"])
    with torch.no_grad():
        m.embed.weight.div_(20)  # back to a spread-out distribution
    a = generate(m, [[1, 2]], "sample", 20, seed=3).tokens
    b = generate(m, [[1, 2]], "sample", 20, seed=3).tokens
    c = generate(m, [[1, 2]], "sample", 20, seed=4).tokens
    assert a == b and a != c
    # first-token frequencies over many rows match the model's softmax (chi-square, 3 dof bins)
    m2 = m
    n = 4000
    out = generate(m2, [[5]] * n, "sample", 1, seed=0).tokens
    p = m2(torch.tensor([[5]]))[0][0, -1].softmax(-1)
    counts = torch.bincount(torch.tensor([o[0] for o in out]), minlength=40).double()
    top = p.argsort(descending=True)[:3]
    obs = torch.cat([counts[top], (n - counts[top].sum()).reshape(1)])
    exp = torch.cat([p[top] * n, (n * (1 - p[top].sum())).reshape(1)])
    chi2 = ((obs - exp) ** 2 / exp).sum().item()
    assert chi2 < 16.3  # p = 0.001 for 3 degrees of freedom


def test_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    keep = lambda **kw: torch.isfinite(filter_logits(logits, SamplingConfig(**kw)))[0].tolist()
    assert keep(top_k=2) == [True, True, False, False]
    assert keep(top_p=0.7) == [True, True, False, False]
    assert keep(top_p=0.85) == [True, True, True, False]
    assert keep(min_p=0.25) == [True, True, True, False]
    assert keep(min_p=0.5) == [True, True, False, False]


def test_stops_and_streaming():
    m = model_of(["attention"])
    free = generate(m, [[1, 2, 3]], "greedy", 12).tokens[0]
    stop_at = free[3:5]
    seen = []
    out = generate(m, [[1, 2, 3]], "greedy", 12, stop=[stop_at], on_token=lambda r, t: seen.append(t))
    first = next(i for i in range(len(free) - 1) if free[i:i + 2] == stop_at)
    assert out.tokens[0] == free[:first + 2] == seen
    eos = generate(m, [[1, 2, 3]], "greedy", 12, eos_id=free[2]).tokens[0]
    assert eos == free[:free.index(free[2]) + 1]


def test_errors():
    m = model_of(["gru"], max_length=10)
    with pytest.raises(PromptError, match="prompt 1 is empty"):
        generate(m, [[1], []], max_new_tokens=2)
    with pytest.raises(PromptError, match="token id 99, outside the vocabulary"):
        generate(m, [[99]], max_new_tokens=2)
    with pytest.raises(PromptError, match=r"max_new_tokens \(12\) leaves no room"):
        generate(m, [[1]], max_new_tokens=12)
    with pytest.raises(PromptError, match=r"plus max_new_tokens \(5\) exceeds .* 10 tokens"):
        generate(m, [[1] * 8], max_new_tokens=5)
    with pytest.raises(ConfigError, match="unknown strategy 'nope'; known strategies: .*greedy, .*sample"):
        generate(m, [[1]], "nope", max_new_tokens=2)
    with pytest.raises(ConfigError, match="strategy 'sample' has no option 'num_beams'"):
        generate(m, [[1]], "sample", max_new_tokens=2, num_beams=2)
    with pytest.raises(ConfigError, match="strategy 'greedy' has no option 'gamma'"):
        generate(m, [[1]], "greedy", max_new_tokens=2, gamma=2)
    with pytest.raises(ConfigError, match="top_p = 1.5"):
        generate(m, [[1]], "sample", top_p=1.5)


def test_defaults_are_greedy_and_ignored_sampling_options_are_refused():
    m = model_of(PATTERNS["hybrid"])
    d = model_of(["gru"])
    prompts = [[1, 2, 3], [4, 5]]
    plain = generate(m, prompts, "greedy", 9).tokens
    # no temperature: every drafting strategy is exactly greedy, as assisted generation is
    assert generate(m, prompts, "speculative", 9, draft=d).tokens == plain
    assert generate(m, prompts, "tree", 9, draft=d).tokens == plain
    assert generate(m, prompts, "prompt-lookup", 9).tokens == plain
    # sample without a temperature samples at 1.0, seeded
    a = generate(m, prompts, "sample", 9, seed=3).tokens
    assert a == generate(m, prompts, "sample", 9, temperature=1.0, seed=3).tokens
    with pytest.raises(ConfigError, match="strategy 'greedy' does not sample, so top_p"):
        generate(m, prompts, "greedy", 9, top_p=0.9)
    with pytest.raises(ConfigError, match="strategy 'beam' does not sample, so seed, temperature"):
        generate(m, prompts, "beam", 9, temperature=0.7, seed=1)
    with pytest.raises(ConfigError, match="top_k only apply when sampling.*give a temperature"):
        generate(m, prompts, "speculative", 9, draft=d, top_k=5)
    assert generate(m, prompts, "beam", 9, temperature=0, num_beams=1,
                    length_penalty=0.0).tokens == plain  # temperature 0 is greedy: allowed
    with pytest.raises(ConfigError, match="needs a draft model"):
        generate(m, prompts, "tree", 9)
    with pytest.raises(ConfigError, match="takes no draft model"):
        generate(m, prompts, "greedy", 9, draft=d)
    with pytest.raises(ConfigError, match=r"SpeculativeConfig.gamma = 0 is not allowed"):
        generate(m, prompts, "speculative", 9, draft=d, gamma=0)


def test_import_seqlab_exposes_decoding():
    import subprocess
    import sys

    code = "import seqlab; print(seqlab.decoding.generate.__name__, sorted(seqlab.decoding.STRATEGIES))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("generate [") and "'speculative'" in out.stdout
