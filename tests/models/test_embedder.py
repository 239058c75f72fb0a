"""Text embeddings: pooling, masks, padding and batching independence, prompts, errors."""

import pytest
import torch

from seqlab.config import ConfigError
from seqlab.models.embedder import EmbedConfig, Embedder
from seqlab.models.lm import build_lm
from seqlab.tokenizer import Tokenizer

TEXTS = ["def add(a, b): return a + b", "x", "class Stack:\n    def push(self, item): ...",
         "for i in range(10): print(i)"]


def model():
    torch.manual_seed(0)
    return build_lm(vocab_size=256, dim=32, layers=["attention(heads=2)", "mamba(d_state=4)"]).double()


@pytest.mark.parametrize("mask", ["causal", "bidirectional"])
@pytest.mark.parametrize("pooling", ["mean", "last", "prompt"])
def test_a_text_embeds_the_same_alone_and_in_a_padded_batch(mask, pooling):
    emb = Embedder(model(), Tokenizer(), EmbedConfig(pooling=pooling, mask=mask, batch_size=3))
    together = emb.embed(TEXTS)
    alone = torch.cat([emb.embed([t]) for t in TEXTS])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-6, rtol=0)


def test_mean_and_last_pooling_are_what_they_say():
    m = model()
    ids = torch.tensor([list(TEXTS[0].encode())])
    hidden, _ = m.features(ids, prefix=ids.shape[1])
    emb = Embedder(m, Tokenizer(), EmbedConfig(pooling="mean", mask="bidirectional", normalize=False))
    torch.testing.assert_close(emb.embed(TEXTS[:1])[0], hidden[0].mean(0).float())
    hidden, _ = m.features(ids)
    emb = Embedder(m, Tokenizer(), EmbedConfig(pooling="last", mask="causal", normalize=False))
    torch.testing.assert_close(emb.embed(TEXTS[:1])[0], hidden[0, -1].float())


def test_the_mask_matters_for_an_encoder():
    m = model()
    causal = Embedder(m, Tokenizer(), EmbedConfig(mask="causal")).embed(TEXTS)
    both = Embedder(m, Tokenizer(), EmbedConfig(mask="bidirectional")).embed(TEXTS)
    assert (causal - both).abs().max() > 1e-3


def test_the_prompt_keeps_its_words_and_cuts_the_text():
    emb = Embedder(model(), Tokenizer(), EmbedConfig(pooling="prompt", max_tokens=150))
    ids = emb.token_ids("y" * 500, kind="query")
    text = bytes(ids).decode()
    assert len(ids) == 150 and text.startswith(EmbedConfig.query_task)
    assert text.endswith(EmbedConfig.summary) and "yyy" in text
    assert bytes(emb.token_ids("z", "document")).decode().startswith(EmbedConfig.document_task)


def test_bad_requests_are_named():
    emb = Embedder(model(), Tokenizer())
    with pytest.raises(ValueError, match="a list of texts"):
        emb.embed("one text")
    with pytest.raises(ValueError, match="kind must be one of document, query"):
        emb.embed(["a"], kind="passage")
    with pytest.raises(ConfigError, match="pooling"):
        EmbedConfig(pooling="max")
    from seqlab.models.block_lm import BlockLM, BlockLMConfig
    with pytest.raises(ValueError, match="need a seqlab LM"):
        Embedder(BlockLM(BlockLMConfig(block_size=4)), Tokenizer())
