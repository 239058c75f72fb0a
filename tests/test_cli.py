"""The command line: every command end to end on a tiny model, and its error messages."""

import subprocess
import sys
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.train.config import RunConfig, read_config_file
from seqlab.train.seq2seq import PairsRunConfig

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.*"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_configs_are_valid(path):
    from seqlab.cli import PAIR_FAMILIES
    from seqlab.train.pointer_task import check_model

    data = read_config_file(path)
    if data.get("model", {}).get("kind") in PAIR_FAMILIES:   # seqlab.train.seq2seq's runs
        run = PairsRunConfig.from_dict(data)
        if run.model.__class__.__name__ == "PointerNetConfig":
            check_model(run.model, run.train)   # the model can learn the task it names
    else:
        RunConfig.from_dict(data)


@pytest.fixture
def trained(tmp_path, small_corpus):
    data = small_corpus
    out = tmp_path / "run"
    rc = main(["train", "--quiet", "--data", str(data), "--mixers", "attention+lstm", "--dim", "32",
               "--steps", "3", "--batch-size", "2", "--seq-len", "32", "--out", str(out),
               "--set", "train.eval_tokens=256", "--set", "model.mixer_options.attention.heads=2"])
    assert rc == 0
    return out, data


def test_train_info_eval_generate(trained, capsys):
    out, data = trained
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "layers     : attention(heads=2)+lstm" in info and "L= 65536" in info
    assert "layer 0      attention        heads=2" in info and "layer 1      lstm             defaults" in info
    assert main(["eval", str(out), "--data", str(data), "--tokens", "512", "--seq-len", "32"]) == 0
    bpb = float(capsys.readouterr().out.split()[0])
    assert 0 < bpb < 9
    assert main(["generate", str(out), "--prompt", "def f(", "--max-new-tokens", "12", "--seed", "1",
                 "--stream", "--stats"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("def f(") and "12 tokens" in cap.err


def test_layers_repeat_the_pattern(tmp_path):
    from seqlab.cli import _run_config_from_args, build_parser

    args = build_parser().parse_args(["train", "--mixers", "attention+mamba*2", "--layers", "7"])
    assert _run_config_from_args(args).model.layers == (
        "attention", "mamba", "mamba", "attention", "mamba", "mamba", "attention")


def test_mixers_take_per_layer_options_and_config_defaults(tmp_path):
    from seqlab.cli import _run_config_from_args, build_parser

    f = tmp_path / "run.yaml"
    f.write_text("model:\n  layers: [gru, {mixer: attention, window: 8}]\n"
                 "  mixer_options:\n    attention: {heads: 2}\n")
    args = build_parser().parse_args(["train", "--mixers", "attention(window=4)*2+attention", "--layers",
                                      "4", "--set", "model.mixer_options.attention.heads=2"])
    layers = _run_config_from_args(args).model.layers
    assert [s.options for s in layers] == [{"heads": 2, "window": 4}] * 2 + [{"heads": 2}] + \
        [{"heads": 2, "window": 4}]
    # --layers alone repeats the config file's pattern, its per-layer options and defaults kept.
    layers = _run_config_from_args(build_parser().parse_args(["train", str(f), "--layers", "3"])).model.layers
    assert [str(s) for s in layers] == ["gru", "attention(heads=2,window=8)", "gru"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/nonexistent/x"], "no such file or folder: '/nonexistent/x'"),
    (["train", "--set", "train.lr=-1"], "TrainConfig.lr = -1.0 is not allowed: expected a positive number"),
    (["train", "--set", "train.stepz=3"], "TrainConfig has no option 'stepz'; known options: steps"),
    (["train", "--mixers", "attn"], "--mixers[0] = attn: unknown mixer 'attn'; known mixers:"),
    (["train", "--mixers", "attention,mamba"], "seqlab train takes one layer pattern, with layers "
     "joined by '+' (a comma separates the patterns of a bench sweep), e.g. --mixers attention+mamba"),
    (["train", "--mixers", "attention(window=0)"],
     "--mixers[0] = attention(window=0): AttentionConfig.window = 0 is not allowed: expected a "
     "positive int or None"),
    (["train", "--mixers", "mamba*x"], "--mixers = 'mamba*x' is not a layer pattern: expected a "
     "repeat count after '*'"),
    (["eval", "/nonexistent/run"], "does not exist; give a run folder"),
    (["generate", "/nonexistent/run", "--prompt", "x"], "does not exist"),
])
def test_bad_input_is_named(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_config_file_names_the_field(tmp_path, capsys):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  dim: 64\n  layers: [attention]\ntrain:\n  batch_size: ten\n")
    assert main(["train", str(f)]) == 2
    assert "TrainConfig.batch_size = 'ten' is not allowed: expected int" in capsys.readouterr().err


def test_corrupt_checkpoint_and_prompt_too_long(trained, capsys):
    out, _ = trained
    w = out / "latest" / "model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[:64])
    assert main(["info", str(out)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    w.write_bytes(good)
    import json
    cfg_file = out / "latest" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["config"]["max_length"] = 16
    cfg_file.write_text(json.dumps(cfg))
    (out / "latest" / "manifest.json").unlink()   # edited by hand: no checksums to match
    assert main(["generate", str(out), "--prompt", "x" * 20, "--max-new-tokens", "4"]) == 2
    assert "exceeds the model's maximum length of 16 tokens" in capsys.readouterr().err


def test_mixers_lists_each_with_cost(capsys):
    assert main(["mixers"]) == 0
    out = capsys.readouterr().out
    for name in ("attention", "gru", "lstm", "mamba"):
        assert name in out
    assert "options:" in out


def test_console_script_help():
    for cmd in ([], ["train"], ["eval"], ["generate"], ["info"], ["demo"]):
        r = subprocess.run([sys.executable, "-m", "seqlab.cli", *cmd, "--help"], capture_output=True,
                           text=True)
        assert r.returncode == 0 and "usage: seqlab" in r.stdout


def test_generate_strategies_agree_with_greedy(trained, capsys):
    out, _ = trained
    common = ["generate", str(out), "--prompt", "def f(", "--max-new-tokens", "10", "--temperature", "0"]
    assert main(common + ["--strategy", "greedy"]) == 0
    greedy = capsys.readouterr().out
    assert main(common + ["--strategy", "speculative", "--draft", str(out), "--gamma", "3", "--stats"]) == 0
    cap = capsys.readouterr()
    assert cap.out == greedy and "draft tokens accepted per call" in cap.err
    assert main(common + ["--strategy", "tree", "--draft", str(out), "--branching", "2,1",
                          "--stats"]) == 0
    cap = capsys.readouterr()
    assert cap.out == greedy and "drafted:" in cap.err and "branching: [2, 1]" in cap.err
    assert main(common + ["--strategy", "tree", "--draft", str(out), "--branching", "2,x"]) == 2
    assert "--branching '2,x' is not a comma-separated list of ints" in capsys.readouterr().err
    assert main(common + ["--strategy", "beam", "--num-beams", "1"]) == 0
    assert capsys.readouterr().out == greedy
    assert main(common + ["--strategy", "beam", "--gamma", "2"]) == 2
    assert "strategy 'beam' has no option 'gamma'" in capsys.readouterr().err
    # sampling options a strategy would ignore are refused, and a draft strategy needs --draft
    assert main(common[:-2] + ["--strategy", "beam", "--top-p", "0.9"]) == 2
    assert "strategy 'beam' does not sample, so top_p would be ignored" in capsys.readouterr().err
    assert main(common[:-2] + ["--strategy", "speculative", "--draft", str(out), "--top-p",
                               "0.9"]) == 2
    assert "give a temperature" in capsys.readouterr().err
    assert main(common + ["--strategy", "speculative"]) == 2
    assert "needs a draft model: add --draft" in capsys.readouterr().err


def test_ctrl_c_while_torch_is_imported_exits_130_without_a_traceback(tmp_path):
    import signal
    import time

    p = subprocess.Popen([sys.executable, "-m", "seqlab", "info", str(tmp_path / "none")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{p.pid}/maps")
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        if "libtorch_cpu" in maps.read_text():   # inside `import torch`, seconds before it ends
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "seqlab: interrupted" in err


def test_train_names_its_layers_in_pattern_syntax(tmp_path, small_corpus, capsys):
    rc = main(["train", "--data", str(small_corpus), "--mixers", "attention(window=8)+lstm",
               "--dim", "32", "--steps", "1", "--batch-size", "2", "--seq-len", "32",
               "--out", str(tmp_path / "run"), "--set", "train.eval_tokens=256"])
    assert rc == 0
    out = capsys.readouterr()
    line = next(ln for ln in (out.out + out.err).splitlines() if ln.startswith("model:"))
    assert "layers attention(window=8)+lstm;" in line and "LayerSpec" not in line


def test_train_model_block_then_info_resume_and_generate(tmp_path, small_corpus, capsys):
    out = tmp_path / "run"
    argv = ["train", "--quiet", "--model", "block", "--data", str(small_corpus), "--dim", "32",
            "--layers", "2", "--batch-size", "2", "--seq-len", "32", "--out", str(out),
            "--set", "train.eval_tokens=256", "--set", "model.local_dim=16",
            "--set", "model.local_layers=attention(heads=2)", "--set", "model.embed_dim=8"]
    assert main(argv + ["--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "family     : block, block size 4" in info
    assert "global dim 32, 2 layers, local dim 16, 1 layers" in info
    assert "layers     : global attention*2; local attention(heads=2)" in info
    assert "local layer 0       attention        heads=2" in info
    assert main(argv + ["--steps", "3", "--resume"]) == 0
    assert "step 3:" in capsys.readouterr().out
    assert main(["train", "--model", "lm", "--out", str(out), "--resume", "--steps", "4"]) == 2
    assert "the run in" in capsys.readouterr().err
    assert main(["generate", str(out), "--prompt", "def f(", "--max-new-tokens", "6",
                 "--strategy", "greedy"]) == 0
    assert capsys.readouterr().out.startswith("def f(")


def test_shape_flags_reach_a_wrapped_backbone():
    from seqlab.cli import _run_config_from_args, build_parser

    run = _run_config_from_args(build_parser().parse_args(
        ["train", "--model", "hmt", "--dim", "48", "--mixers", "attention(heads=2)+gru",
         "--layers", "3", "--set", "model.segment=32"]))
    assert run.kind == "hmt" and run.model.segment == 32 and run.model.backbone.dim == 48
    assert [str(s) for s in run.model.backbone.layers] == ["attention(heads=2)", "gru",
                                                            "attention(heads=2)"]
    run = _run_config_from_args(build_parser().parse_args(["train", "--model", "hmt", "--layers", "2"]))
    assert [str(s) for s in run.model.backbone.layers] == ["attention", "attention"]


def test_train_an_encoder_with_mlm_then_eval_it_by_its_objective(tmp_path, small_corpus, capsys):
    out = tmp_path / "enc"
    assert main(["train", "--quiet", "--objective", "mlm", "--data", str(small_corpus),
                 "--mixers", "attention(heads=2)+lstm", "--dim", "32", "--steps", "2",
                 "--batch-size", "2", "--seq-len", "32", "--out", str(out),
                 "--set", "train.eval_tokens=256"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(small_corpus), "--tokens", "512"]) == 0
    assert "masked tokens at seq_len 32 (mlm)" in capsys.readouterr().out
    assert main(["eval", str(out), "--data", str(small_corpus), "--tokens", "512",
                 "--objective", "prefix"]) == 0
    assert "after-prefix tokens" in capsys.readouterr().out
    assert main(["train", "--objective", "mlm", "--model", "block", "--data", str(small_corpus),
                 "--steps", "1", "--out", str(tmp_path / "b")]) == 2
    assert "non-causal face" in capsys.readouterr().err


def test_embed_a_file_with_an_encoder_run(trained, tmp_path, capsys):
    import json

    import numpy as np

    out, _ = trained
    texts = tmp_path / "texts.txt"
    texts.write_text("def add(a, b):\n\nreturn a + b\nclass Stack: pass\n")
    assert main(["embed", str(out), "--input", str(texts), "--quiet"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]          # the blank line is skipped
    assert abs(sum(x * x for x in rows[0]["embedding"]) - 1) < 1e-4
    assert main(["embed", str(out), "--input", str(texts), "--output", str(tmp_path / "v.npy"),
                 "--pooling", "prompt", "--query", "--quiet"]) == 0
    assert np.load(tmp_path / "v.npy").shape == (3, len(rows[0]["embedding"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no"}\n')
    assert main(["embed", str(out), "--input", str(bad)]) == 2
    assert "bad.jsonl line 2 is not a JSON object with a \"text\" string" in capsys.readouterr().err
    assert main(["embed", str(out), "--input", str(tmp_path / "missing.txt")]) == 2
    assert "is not a file" in capsys.readouterr().err
