"""SentencePiece BPE vocabularies in GGUF files (tokenizer.ggml.model = "llama": Llama 2,
Gemma), checked against the sentencepiece library itself.

A small BPE model with byte fallback is trained here on stdlib docstrings, once with
SentencePiece's dummy prefix (Llama 2's add_space_prefix = true) and once without (Gemma's),
written into a GGUF file as llama.cpp's converter writes one, and read back with
``read_tokenizer``. seqlab's ids must be sentencepiece's, its text the original, and a
stream of its tokens the same text, multi-byte characters split over byte pieces included.
"""

from __future__ import annotations

import argparse
import collections
import functools
import inspect
import io
import json
import re
import textwrap

import pytest

spm = pytest.importorskip("sentencepiece", reason="the reference is the sentencepiece library")
gguf = pytest.importorskip("gguf", reason="GGUF files are written with the gguf package")

from seqlab.decoding.stream import TextStops, TextStreamer  # noqa: E402
from seqlab.errors import CheckpointError  # noqa: E402
from seqlab.models.pretrained.gguf import GGUFError, open_gguf, read_tokenizer  # noqa: E402
from seqlab.tokenizer import (  # noqa: E402
    TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_UNUSED, TOKEN_USER_DEFINED,
    PretrainedTokenizer, load_tokenizer, sentencepiece_merges)

PAD, EOS, BOS, UNK = 0, 1, 2, 3          # Gemma's order
USER = ("<start_of_turn>", "<end_of_turn>")   # user-defined: sentencepiece matches them in text
CONTROL = ("<ctrl>",)                         # control: sentencepiece never matches these in text
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
            "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}"
            "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

TEXTS = [
    "Return a new dictionary with keys from iterable and values equal to value.",
    "Hello  world,   three   spaces,    four, and a trailing space ",
    " leading space", "  two leading", "", " ", "    ", "\n", "\n\n\n", "\t",
    "def f(x):\n    if x:\n\treturn x ** 2  # a tab\n    return None\n",
    'class A:\n    """Doc."""\n\n    def __init__(self):\n        self.x = {"a": [1, 2, 3]}\n',
    "café déjà vu: naïve façade",                 # in the corpus: whole pieces
    "Zürich, Ελληνικά, 中文, русский",             # not in the corpus: byte fallback
    "emoji 😀👍🏽 and ✓ — “quotes” e\u0301",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "a<start_of_turn>b<end_of_turn> c",
    "<ctrl>", "x<ctrl>y", "<ctrl> z <ctrl>", "<s>not the bos</s><pad>", "<unk> stays whole",
    "<start_of_turn <ctr l> <s >",                # almost special: plain text
]


@functools.cache
def _corpus() -> list[str]:
    lines = []
    for module in (argparse, collections, functools, inspect, json, textwrap):
        for obj in vars(module).values():
            doc = inspect.getdoc(obj)
            if doc:
                lines.extend(line for line in doc.splitlines() if line.strip())
    return lines + ["café déjà vu, naïve façade"]


@functools.cache
def _held_out() -> list[str]:
    """Docstrings the model was not trained on, whole (newlines, indented examples)."""
    import pathlib
    import shlex
    return [d for d in (inspect.getdoc(o) for o in (*vars(shlex).values(), *vars(pathlib.Path).values()))
            if d][:60]


@functools.cache
def trained(prefix: bool) -> spm.SentencePieceProcessor:
    """A SentencePiece BPE model as Llama 2 (prefix) or Gemma (none) set theirs; ~0.1 s."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=model, model_type="bpe", vocab_size=700,
        byte_fallback=True, add_dummy_prefix=prefix, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        character_coverage=1.0, user_defined_symbols=list(USER), control_symbols=list(CONTROL),
        pad_id=PAD, eos_id=EOS, bos_id=BOS, unk_id=UNK, num_threads=1, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def gguf_vocab(sp) -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and types as llama.cpp's ``_set_vocab_sentencepiece`` writes them; the
    user-defined pieces as its added-tokens pass marks them (score -1000, "▁" as a space)."""
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        piece, score = sp.id_to_piece(i), sp.get_score(i)
        kind = (TOKEN_UNKNOWN if sp.is_unknown(i) else TOKEN_CONTROL if sp.is_control(i)
                else TOKEN_UNUSED if sp.is_unused(i) else TOKEN_BYTE if sp.is_byte(i) else TOKEN_NORMAL)
        if piece in USER:
            piece, score, kind = piece.replace("\u2581", " "), -1000.0, TOKEN_USER_DEFINED
        tokens.append(piece)
        scores.append(score)
        types.append(kind)
    return tokens, scores, types


def write_gguf(path, sp, prefix: bool | None, *, arch="gemma3", ids=True, scores=True, extra=None):
    """A GGUF file that holds only ``sp``'s tokenizer (read_tokenizer needs no tensors).
    ``prefix=None`` and ``ids=False`` leave those keys out (llama.cpp's defaults apply)."""
    tokens, piece_scores, types = gguf_vocab(sp)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    if scores:
        w.add_token_scores(piece_scores)
    w.add_token_types(types)
    if ids:
        w.add_bos_token_id(BOS)
        w.add_eos_token_id(EOS)
        w.add_unk_token_id(UNK)
        w.add_pad_token_id(PAD)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
    if prefix is not None:
        w.add_add_space_prefix(prefix)
    w.add_chat_template(TEMPLATE)
    for key, value in (extra or {}).items():
        w.add_bool(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read(path) -> PretrainedTokenizer:
    return read_tokenizer(open_gguf(path), path)


@functools.lru_cache(maxsize=4)
def specials(sp) -> dict[str, int]:
    """Pieces matched whole in the text: control, unknown and user-defined."""
    return {sp.id_to_piece(i): i for i in range(sp.get_piece_size())
            if sp.is_control(i) or sp.is_unknown(i) or sp.id_to_piece(i) in USER}


def reference(sp, text: str) -> list[int]:
    """sentencepiece's ids for ``text`` with special tokens cut out first and each stretch of
    text between them encoded as one sentence: llama.cpp's rule (with the dummy prefix, a
    stretch after a special token gets its own prefix, as after <s> in Llama 2's prompts)."""
    whole = specials(sp)
    pattern = "(" + "|".join(re.escape(t) for t in sorted(whole, key=len, reverse=True)) + ")"
    ids = []
    for part in re.split(pattern, text):
        if part in whole:
            ids.append(whole[part])
        elif part:
            ids += sp.encode(part)
    return ids


def has_special(sp, text: str) -> bool:
    return any(t in text for t in specials(sp))


def stream(tok, ids, stops=()) -> list[str]:
    t = TextStops(tok.decode_bytes, stops)
    return [t.add(i) for i in ids] + [t.finish()]


@pytest.fixture(scope="module", params=[False, True], ids=["gemma-no-prefix", "llama2-prefix"])
def case(request, tmp_path_factory):
    prefix = request.param
    sp = trained(prefix)
    tok = read(write_gguf(tmp_path_factory.mktemp("spm") / "vocab.gguf", sp, prefix))
    return sp, tok, prefix


def texts() -> list[str]:
    return TEXTS + _corpus()[::25] + _held_out()


# -- encode --------------------------------------------------------------------------------

def test_encode_matches_sentencepiece(case):
    sp, tok, prefix = case
    assert tok.vocab_size == sp.get_piece_size()
    assert (tok.bos_id, tok.eos_id) == (BOS, EOS)
    for s in texts():
        assert tok.encode(s) == [BOS] + reference(sp, s), s
        if not has_special(sp, s):
            assert tok.encode(s)[1:] == sp.encode(s), s


def test_byte_fallback_is_used(case):
    """The test texts need byte fallback and whitespace-only pieces, or they test less."""
    sp, tok, _ = case
    ids = [i for s in TEXTS for i in tok.encode(s)]
    assert sum(sp.is_byte(i) for i in ids) > 30
    assert any(sp.id_to_piece(i) == "\u2581" * 4 for i in ids)


def test_user_defined_tokens_match_sentencepiece_without_prefix():
    """Where sentencepiece itself matches special pieces (user-defined ones) and no dummy
    prefix is involved (Gemma), its own encode of the whole text is seqlab's."""
    sp = trained(False)
    tok = PretrainedTokenizer.from_gguf_vocab(model="llama", pre=None, tokens=gguf_vocab(sp)[0],
                                              scores=gguf_vocab(sp)[1], token_types=gguf_vocab(sp)[2],
                                              unk_id=UNK, add_space_prefix=False)
    for s in ("<start_of_turn>user\nhi<end_of_turn>\n", "a<start_of_turn>b<end_of_turn>c  "):
        assert tok.encode(s) == sp.encode(s), s


def test_sentencepiece_merges_rank_by_the_merged_piece():
    merges = sentencepiece_merges(["a", "b", "ab", "\u2581", "\u2581ab", "<0x41>", "<c>"],
                                  [-1, -2, -0.5, -3, -0.1, 0, 0],
                                  [TOKEN_NORMAL] * 5 + [TOKEN_BYTE, TOKEN_CONTROL])
    assert merges == [("\u2581", "ab"), ("a", "b")]


# -- decode --------------------------------------------------------------------------------

def test_decode_round_trips(case):
    sp, tok, _ = case
    for s in texts():
        ids = tok.encode(s)
        assert ids[0] == BOS and tok.decode(ids) == "<s>" + s, s
        assert tok.decode(ids[1:]) == s, s
        if not has_special(sp, s):
            assert tok.decode(ids[1:]) == sp.decode(ids[1:]), s


def test_decode_bytes_is_a_continuation(case):
    """decode_bytes keeps the dummy prefix of the first token (a generated "▁world" is
    " world") and drops the one after a special token; token_byte_lengths count each
    token's bytes, that prefix included."""
    sp, tok, prefix = case
    lengths = tok.token_byte_lengths()
    for s in texts():
        ids = tok.encode(s)[1:]
        lead = " " if prefix and s and not s.startswith(tuple(specials(sp))) else ""
        assert tok.decode_bytes(ids) == (lead + s).encode(), s
        if not (prefix and has_special(sp, s)):
            assert int(lengths[ids].sum()) == len(tok.decode_bytes(ids)), s
    assert tok.decode_bytes([sp.piece_to_id("<0xF0>"), sp.piece_to_id("<0x9F>")]) == b"\xf0\x9f"


# -- streaming -----------------------------------------------------------------------------

def test_stream_gives_the_text_token_by_token(case):
    sp, tok, prefix = case
    for s in TEXTS + _corpus()[::25] + _held_out()[:5]:
        ids = tok.encode(s)[1:]
        parts = stream(tok, ids)
        assert "".join(parts) == tok.decode_bytes(ids).decode(), s
        assert all("\ufffd" not in p for p in parts), s


def test_stream_of_a_continuation(case):
    """A prompt decoded whole, then the rest streamed: the original text, at every cut that
    falls between characters. (Not right after a special token with the dummy prefix: a
    stream cannot see the token before it, and shows that prefix, as llama.cpp does.)"""
    sp, tok, prefix = case
    after_special = set(specials(sp).values()) if prefix else set()
    for s in TEXTS:
        ids = tok.encode(s)[1:]
        for k in range(1, len(ids)):
            head = tok.decode(ids[:k])
            if "\ufffd" not in head and ids[k - 1] not in after_special:
                assert head + "".join(stream(tok, ids[k:])) == s, (s, k)


def test_a_character_split_over_byte_pieces_comes_out_whole(case):
    sp, tok, prefix = case
    ids = tok.encode("ok 😀!")[1:]
    pieces = [sp.id_to_piece(i) for i in ids]
    at = pieces.index("<0xF0>")
    assert pieces[at:at + 4] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    parts = stream(tok, ids)
    assert parts[at:at + 4] == ["", "", "", "😀"]
    assert "".join(parts) == (" " if prefix else "") + "ok 😀!"
    out = io.StringIO()
    streamer = TextStreamer(tok.decode_bytes, out)
    for i in ids:
        streamer(0, i)
    streamer.finish()
    assert out.getvalue() == "".join(parts) and streamer.ids == ids


def test_stream_stops_at_a_stop_string(case):
    _, tok, _ = case
    ids = tok.encode("the answer is 4<end_of_turn>\nmore")[1:]
    parts = stream(tok, ids, stops=["<end_of_turn>"])
    assert "".join(parts).strip() == "the answer is 4"


# -- chat, files, defaults -----------------------------------------------------------------

def test_chat_template_gives_one_bos(case):
    sp, tok, _ = case
    messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
                {"role": "user", "content": "  And   3+3?\n"}]
    text = tok.apply_chat_template(messages)
    assert text == ("<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n"
                    "<start_of_turn>user\nAnd   3+3?<end_of_turn>\n<start_of_turn>model\n")
    ids = tok.encode(text)
    assert ids == [BOS] + reference(sp, text) and ids.count(BOS) == 1
    assert tok.decode(ids) == "<s>" + text


def test_chat_template_keeps_its_bos_when_encode_adds_none():
    sp = trained(False)
    tokens, scores, types = gguf_vocab(sp)
    tok = PretrainedTokenizer.from_gguf_vocab(model="llama", pre=None, tokens=tokens, scores=scores,
                                              token_types=types, bos_id=BOS, add_bos=False,
                                              add_space_prefix=False, chat_template=TEMPLATE)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text.startswith("<s><start_of_turn>user")
    assert tok.encode(text)[0] == BOS and tok.encode(text).count(BOS) == 1


def test_save_and_load(case, tmp_path):
    _, tok, _ = case
    tok.save(tmp_path)
    back = load_tokenizer(tmp_path)
    assert isinstance(back, PretrainedTokenizer)
    assert (back.bos_id, back.eos_id, back.chat_template) == (tok.bos_id, tok.eos_id, TEMPLATE)
    for s in TEXTS:
        ids = tok.encode(s)
        assert back.encode(s) == ids, s
        assert back.decode(ids) == tok.decode(ids), s
        assert back.decode_bytes(ids[1:]) == tok.decode_bytes(ids[1:]), s
    assert (back.token_byte_lengths() == tok.token_byte_lengths()).all()


def test_llama_cpp_defaults(tmp_path):
    """A file without the ids, add_bos or add_space_prefix gets llama.cpp's SentencePiece
    defaults: BOS 1, EOS 2, a BOS added, a space prefix."""
    sp = trained(True)
    tok = read(write_gguf(tmp_path / "bare.gguf", sp, None, arch="llama", ids=False))
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    for s in TEXTS[:12]:
        assert tok.encode(s) == [1] + reference(sp, s), s


def test_errors(tmp_path):
    sp = trained(False)
    with pytest.raises(GGUFError, match=r"no scores \(tokenizer\.ggml\.scores missing\)"):
        read(write_gguf(tmp_path / "noscores.gguf", sp, False, scores=False))
    with pytest.raises(GGUFError, match="tokenizer.ggml.remove_extra_whitespaces"):
        read(write_gguf(tmp_path / "ws.gguf", sp, False,
                        extra={"tokenizer.ggml.remove_extra_whitespaces": True}))
    tokens, scores, types = gguf_vocab(sp)
    for model in ("bert", "t5"):
        with pytest.raises(CheckpointError, match=rf"tokenizer\.ggml\.model = '{model}'.*"
                                                   r"supported: 'gpt2' .*'llama' \(SentencePiece BPE"):
            PretrainedTokenizer.from_gguf_vocab(model=model, pre=None, tokens=tokens, scores=scores,
                                                token_types=types)
