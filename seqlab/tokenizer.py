"""Tokenizers: bytes (the default), a BPE trained on a corpus, or a pretrained
model's tokenizer (byte-level BPE, or SentencePiece BPE with byte fallback) with
its special ids and chat template.

``Tokenizer`` is the plain one (bytes when it holds no BPE); a GGUF file or a
Hugging Face folder gives a :class:`PretrainedTokenizer`, rebuilt with the
``tokenizers`` library (``PretrainedTokenizer.from_gguf_vocab`` /
``PretrainedTokenizer.load``). :func:`load_tokenizer` reads whichever a
folder holds.

Example:
    >>> model, tok = seqlab.models.pretrained.load_pretrained("smollm2")
    >>> ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Hi!"}]))
"""


from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from seqlab.errors import CheckpointError

class Tokenizer:
    """Bytes by default; a trained byte-level BPE (``tokenizers``) when asked."""

    def __init__(self, bpe=None):
        self.bpe = bpe  # a tokenizers.Tokenizer or None
        self.vocab_size = 256 if bpe is None else bpe.get_vocab_size()
        self._token_bytes = None

    def encode(self, text: str | bytes) -> list[int]:
        if self.bpe is None:
            return list(text.encode() if isinstance(text, str) else text)
        return self.bpe.encode(text if isinstance(text, str) else text.decode("utf-8", "replace")).ids

    def decode_bytes(self, ids) -> bytes:
        if self.bpe is None:
            return bytes(int(i) for i in ids)
        return self.bpe.decode(list(map(int, ids))).encode()

    def token_byte_lengths(self) -> np.ndarray:
        """Bytes that each token id stands for (for bits-per-byte accounting)."""
        if self._token_bytes is None:
            if self.bpe is None:
                self._token_bytes = np.ones(256, dtype=np.int64)
            else:
                # Byte-level BPE spells each byte as one character of its alphabet.
                self._token_bytes = np.array(
                    [len(self.bpe.id_to_token(i) or "") for i in range(self.vocab_size)], dtype=np.int64)
        return self._token_bytes

    def bytes_per_token(self, ids: np.ndarray) -> float:
        return float(self.token_byte_lengths()[ids].mean())

    def save(self, folder: Path) -> None:
        if self.bpe is not None:
            self.bpe.save(str(folder / "tokenizer.json"))

    @classmethod
    def load(cls, folder: Path) -> "Tokenizer":
        f = Path(folder) / "tokenizer.json"
        if not f.is_file():
            return cls()
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return cls(HFTokenizer.from_file(str(f)))
        except Exception as e:  # the Rust library raises a bare Exception for a bad file
            raise CheckpointError(f"{f} cannot be read ({e}); the tokenizer file is corrupt or "
                                  "not a tokenizers JSON file") from None


# llama.cpp's token types (tokenizer.ggml.token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# The split llama.cpp applies for tokenizer.ggml.pre = "llama-bpe" (Llama 3) before byte-level BPE.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CONFIG = "tokenizer_config.json"
TOKENIZER = "tokenizer.json"


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _pre_tokenizer(pre: str):
    """The pre-tokenizer llama.cpp uses for ``tokenizer.ggml.pre = pre`` (None if unknown)."""
    from tokenizers import Regex, pre_tokenizers

    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("default", "gpt-2", "gpt2"):
        return gpt2
    if pre == "smollm":
        # llama.cpp splits every digit off first (as SmolLM's own tokenizer.json does with
        # Digits(individual_digits=True)), then applies GPT-2's regex to the rest.
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2])
    if pre in ("llama-bpe", "llama3", "llama-v3"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return None


SUPPORTED_PRE = ("default", "gpt-2", "gpt2", "smollm", "llama-bpe", "llama3", "llama-v3")
# tokenizer.ggml.model values from_gguf_vocab rebuilds, with what each is.
SUPPORTED_MODELS = {"gpt2": "byte-level BPE", "llama": "SentencePiece BPE with byte fallback"}

# SentencePiece's word-boundary mark, which stands for a space inside its pieces.
SPACE_MARK = "\u2581"
# A byte-fallback piece: "<0x0A>" is the byte 0x0A (tokenizers' ByteFallback reads this form).
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _byte_level_bpe(tokens: Sequence[str], merges: Sequence[str], pre: str | None, name: str):
    """``tokenizer.ggml.model = "gpt2"``: byte-level BPE after llama.cpp's ``pre`` split."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models

    pre = pre or "default"
    pre_tok = _pre_tokenizer(pre)
    if pre_tok is None:
        raise CheckpointError(f"{name} has tokenizer.ggml.pre = {pre!r}, which is not supported; "
                              f"supported: {', '.join(SUPPORTED_PRE)}")
    alphabet = set(byte_alphabet().values())
    spell = byte_alphabet()
    # A byte-level vocabulary spells every token in the byte alphabet; respell any that is not.
    vocab = {}
    for i, tok in enumerate(tokens):
        key = tok if set(tok) <= alphabet else "".join(spell[b] for b in tok.encode("utf-8"))
        vocab.setdefault(key, i)
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    bpe = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, dropout=None, continuing_subword_prefix="",
                                end_of_word_suffix="", fuse_unk=False))
    bpe.pre_tokenizer = pre_tok
    bpe.decoder = decoders.ByteLevel()
    return bpe, vocab


def sentencepiece_merges(tokens: Sequence[str], scores: Sequence[float],
                         token_types: Sequence[int]) -> list[tuple[str, str]]:
    """BPE merges, best first, that reproduce SentencePiece BPE from its pieces and scores.

    SentencePiece merges, among adjacent symbols, the pair whose concatenation is a
    piece with the highest score. So every split of a normal piece into two pieces
    that can stand as symbols is a merge, ranked by the merged piece's score (then id).
    Control, user-defined, unknown and byte pieces never take part (they are matched
    whole or come from byte fallback); unused pieces may be a part but are never
    produced, as SentencePiece never outputs them.

    Example:
        >>> sentencepiece_merges(["a", "b", "ab", "▁", "▁ab"], [-1, -2, -0.5, -3, -0.1], [1] * 5)
        [('▁', 'ab'), ('a', 'b')]
    """
    parts = {t for t, ty in zip(tokens, token_types)
             if ty in (TOKEN_NORMAL, TOKEN_UNUSED) and not _BYTE_PIECE.fullmatch(t)}
    first: dict[str, int] = {}
    ranked = []
    for i, (piece, ty) in enumerate(zip(tokens, token_types)):
        if ty != TOKEN_NORMAL or first.setdefault(piece, i) != i or _BYTE_PIECE.fullmatch(piece):
            continue
        for k in range(1, len(piece)):
            if piece[:k] in parts and piece[k:] in parts:
                ranked.append((-float(scores[i]), i, k))
    ranked.sort()
    return [(tokens[i][:k], tokens[i][k:]) for _, i, k in ranked]


def _sentencepiece_bpe(tokens: Sequence[str], scores: Sequence[float] | None,
                       token_types: Sequence[int], unk_id: int | None, add_space_prefix: bool,
                       name: str):
    """``tokenizer.ggml.model = "llama"``: SentencePiece BPE with byte fallback."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers

    if scores is None:
        raise CheckpointError(f"{name} has a SentencePiece vocabulary but no scores "
                              "(tokenizer.ggml.scores missing)")
    if len(scores) != len(tokens):
        raise CheckpointError(f"{name} has {len(tokens)} tokens but {len(scores)} scores "
                              "(tokenizer.ggml.scores)")
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
    # Runs of unknown characters become one unknown piece, as in SentencePiece; with all
    # 256 byte pieces present (byte fallback) unknown pieces do not occur at all.
    bpe = HFTokenizer(models.BPE(vocab=vocab, merges=sentencepiece_merges(tokens, scores, token_types),
                                 dropout=None, unk_token=unk, fuse_unk=True, byte_fallback=True))
    # No pre-tokenizer: SentencePiece merges across the whole text, spaces included. The
    # normalizer runs on each stretch of text between special tokens, so (as in llama.cpp)
    # the space prefix is added at the start and after every control or user-defined token.
    steps = [normalizers.Prepend(SPACE_MARK)] if add_space_prefix else []
    bpe.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", SPACE_MARK)])
    steps = [decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    bpe.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if add_space_prefix else []))
    return bpe, vocab


@dataclass(frozen=True)
class _Spelling:
    """How a tokenizer turns tokens into text, read from its decoder and normalizer.

    ``kind`` is "byte-level" (each character one byte of GPT-2's alphabet), "pieces"
    (each token is its text after ``replace``, or one byte when ``byte_fallback`` and it
    is a ``<0xNN>`` piece; then concatenated) or "decoder" (anything else: ask tokenizers).
    ``strip``: leading spaces a whole-text decode drops (SentencePiece's space prefix);
    ``strip_after_added``: the normalizer put that prefix before every stretch of text,
    so it is dropped again after each added (special or user-defined) token.
    """

    kind: str
    replace: tuple[tuple[str, str], ...] = ()
    byte_fallback: bool = False
    strip: int = 0
    strip_after_added: bool = False


def _spelling_of(decoder, normalizer) -> _Spelling:
    if decoder is None:
        return _Spelling("decoder")
    spec = json.loads(decoder.__getstate__())
    if spec["type"] == "ByteLevel":
        return _Spelling("byte-level")
    steps = spec["decoders"] if spec["type"] == "Sequence" else [spec]
    replace, fallback, fused, strip = [], False, False, 0
    for n, step in enumerate(steps):
        kind = step["type"]
        if kind == "Replace" and "String" in step["pattern"] and not fused:
            replace.append((step["pattern"]["String"], step["content"]))
        elif kind == "ByteFallback" and not fused:
            fallback = True
        elif kind == "Fuse":
            fused = True
        elif (kind == "Strip" and fused and n == len(steps) - 1 and step["content"] == " "
              and step["stop"] == 0):
            strip = int(step["start"])  # after Fuse: the start of the whole text
        else:
            return _Spelling("decoder")
    norm = json.loads(normalizer.__getstate__()) if normalizer is not None else {}
    norm_steps = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    prepends = any(n.get("type") == "Prepend" and n.get("prepend") == SPACE_MARK for n in norm_steps)
    return _Spelling("pieces", tuple(replace), fallback, strip, strip_after_added=bool(strip) and prepends)


class PretrainedTokenizer(Tokenizer):
    """A pretrained model's tokenizer with its special ids and chat template.

    Byte-level BPE (GPT-2, Llama 3, SmolLM) or SentencePiece BPE with byte fallback
    (Llama 2, Gemma), as a ``tokenizers.Tokenizer``. ``encode`` adds the BOS/EOS the
    model asks for; ``decode_bytes`` gives each token's exact bytes (for streaming),
    ``decode`` the whole text.

    Args:
        bpe: a ``tokenizers.Tokenizer``.
        bos_id, eos_id: the begin/end-of-sequence ids (None if the model has none).
        chat_template: a Jinja chat template, or None.
        name: where it came from, for messages.
    """

    def __init__(self, bpe, *, bos_id: int | None = None, eos_id: int | None = None,
                 chat_template: str | None = None, name: str = "tokenizer"):
        super().__init__(bpe)
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.chat_template = chat_template
        self.name = name
        self._bytes: list[bytes] | None = None
        self._template = None
        self._spelled: _Spelling | None = None
        self._added: set[int] = set()   # ids of added tokens, filled with the bytes table

    # -- building -----------------------------------------------------------------
    @classmethod
    def from_gguf_vocab(cls, *, model: str, pre: str | None, tokens: Sequence[str],
                        merges: Sequence[str] = (), token_types: Sequence[int] | None = None,
                        scores: Sequence[float] | None = None,
                        bos_id: int | None = None, eos_id: int | None = None,
                        unk_id: int | None = None, add_bos: bool = False, add_eos: bool = False,
                        add_space_prefix: bool = True,
                        chat_template: str | None = None, name: str = "GGUF file") -> "PretrainedTokenizer":
        """Rebuild the tokenizer a GGUF file describes (``tokenizer.ggml.*`` metadata).

        Args:
            model: ``tokenizer.ggml.model``: ``"gpt2"`` (byte-level BPE) or ``"llama"``
                (SentencePiece BPE with byte fallback: Llama 2, Gemma).
            pre: ``tokenizer.ggml.pre``, llama.cpp's name for the split before byte-level
                BPE (SentencePiece has none; ignored for ``"llama"``).
            tokens, token_types: the vocabulary in id order and llama.cpp's type of each
                token (control and unknown tokens are matched whole in the text, as are
                user-defined ones; for ``"llama"`` byte tokens are ``<0xNN>`` pieces).
            merges: ``"gpt2"``: the merges (``"a b"`` strings, best first).
            scores: ``"llama"``: each piece's score (higher merges first).
            bos_id, eos_id, unk_id, add_bos, add_eos: special ids, and whether encode adds them.
            add_space_prefix: ``"llama"``: put a space before the text (and after each
                special token), as SentencePiece's ``add_dummy_prefix`` (Llama 2: true,
                Gemma: false); ``decode`` takes it off again.
            chat_template: ``tokenizer.chat_template`` or None.

        Raises:
            CheckpointError: an unsupported tokenizer model or pre-tokenizer (named,
                with the supported ones), or a SentencePiece vocabulary without scores.

        Example:
            >>> tok = PretrainedTokenizer.from_gguf_vocab(
            ...     model="llama", pre=None, tokens=["<unk>", "▁", "a", "▁a"], scores=[0, -1, -2, -3],
            ...     token_types=[2, 1, 1, 1], unk_id=0)
            >>> tok.encode("a a"), tok.decode(tok.encode("a a"))
            ([3, 3], 'a a')
        """
        from tokenizers import AddedToken, processors

        types = list(token_types) if token_types is not None else [TOKEN_NORMAL] * len(tokens)
        if len(types) != len(tokens):
            raise CheckpointError(f"{name} has {len(tokens)} tokens but {len(types)} token types "
                                  "(tokenizer.ggml.token_type)")
        if model == "gpt2":
            bpe, vocab = _byte_level_bpe(tokens, merges, pre, name)
        elif model == "llama":
            bpe, vocab = _sentencepiece_bpe(tokens, scores, types, unk_id, add_space_prefix, name)
        else:
            supported = ", ".join(f"{k!r} ({v})" for k, v in SUPPORTED_MODELS.items())
            raise CheckpointError(f"{name} has tokenizer.ggml.model = {model!r}, which is not supported; "
                                  f"supported: {supported}")
        # Control tokens (<|im_start|>, <bos>) and the unknown token are matched whole in the
        # text, as llama.cpp does with special parsing on; user-defined ones always are.
        control = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types)
                   if ty in (TOKEN_CONTROL, TOKEN_UNKNOWN) and t in vocab]
        user = [AddedToken(t, special=False, normalized=False)
                for t, ty in zip(tokens, types) if ty == TOKEN_USER_DEFINED and t in vocab]
        if control:
            bpe.add_special_tokens(control)
        if user:
            bpe.add_tokens(user)
        single, specials = "$A", []
        if add_bos and bos_id is not None:
            single = f"{tokens[bos_id]} {single}"
            specials.append((tokens[bos_id], bos_id))
        if add_eos and eos_id is not None:
            single = f"{single} {tokens[eos_id]}"
            specials.append((tokens[eos_id], eos_id))
        if specials:
            bpe.post_processor = processors.TemplateProcessing(single=single, special_tokens=specials)
        tok = cls(bpe, bos_id=bos_id, eos_id=eos_id, chat_template=chat_template or None, name=name)
        tok.vocab_size = len(tokens)
        return tok

    # -- the Tokenizer interface ------------------------------------------------
    def decode_bytes(self, ids) -> bytes:
        """The bytes of ``ids``, token after token, special tokens included (as their text).

        These are exact for byte-level and SentencePiece vocabularies: a token may end
        inside a UTF-8 character, and the bytes of ``ids[:k]`` are a prefix of those of
        ``ids``, so a stream (``decoding.stream.TextStops``) can decode as tokens come.
        They read ``ids`` as a continuation: a SentencePiece space prefix at the start
        stays (a generated "▁world" is " world"); ``decode`` drops it from a whole text.
        Other vocabularies go through ``tokenizers``' decoder.
        """
        if self._spelling().kind == "decoder":
            return self.bpe.decode(list(map(int, ids)), skip_special_tokens=False).encode()
        return b"".join(self._spell([int(i) for i in ids], at_start=False))

    def decode(self, ids) -> str:
        """The text of ``ids`` as a whole (an incomplete UTF-8 sequence becomes U+FFFD).

        ``decode_bytes`` as text, except that the space a SentencePiece tokenizer puts
        before the text (``add_space_prefix``) also comes off its first token, as
        SentencePiece does, so ``decode(encode(s)) == s`` (after any BOS's text).
        """
        if self._spelling().kind == "decoder":
            return self.decode_bytes(ids).decode("utf-8", "replace")
        return b"".join(self._spell([int(i) for i in ids], at_start=True)).decode("utf-8", "replace")

    def _spelling(self) -> _Spelling:
        if self._spelled is None:
            self._spelled = _spelling_of(self.bpe.decoder, self.bpe.normalizer)
        return self._spelled

    def _spell(self, ids: list[int], at_start: bool) -> list[bytes]:
        """Each token's bytes, less the space prefix that encode put before a stretch of
        text: after an added token (with ``strip_after_added``) and, ``at_start``, first."""
        table = self._token_bytes_table()
        parts = [table[i] for i in ids]
        spelling = self._spelling()
        if not spelling.strip:
            return parts
        pending = at_start
        for k, i in enumerate(ids):
            if i in self._added:
                pending = pending or spelling.strip_after_added
                continue
            if pending:
                head = parts[k]
                parts[k] = head[min(len(head) - len(head.lstrip(b" ")), spelling.strip):]
                pending = False
        return parts

    def token_byte_lengths(self) -> np.ndarray:
        if self._spelling().kind == "decoder":
            return super().token_byte_lengths()
        if self._token_bytes is None:
            self._token_bytes = np.array([len(b) for b in self._token_bytes_table()], dtype=np.int64)
        return self._token_bytes

    def _token_bytes_table(self) -> list[bytes]:
        """Each id's bytes: the byte-level alphabet undone, or a SentencePiece piece's text
        ("▁" a space, ``<0xNN>`` the byte 0xNN); special tokens as their text."""
        if self._bytes is None:
            spelling = self._spelling()
            added = self.bpe.get_added_tokens_decoder()
            self._added = set(added)
            special = {t.content for t in added.values()}
            inverse = {c: b for b, c in byte_alphabet().items()}
            table = []
            for i in range(self.vocab_size):
                tok = self.bpe.id_to_token(i) or ""
                if spelling.kind == "byte-level":
                    if tok in special or not all(c in inverse for c in tok):
                        table.append(tok.encode("utf-8"))
                    else:
                        table.append(bytes(inverse[c] for c in tok))
                elif spelling.byte_fallback and tok not in special and _BYTE_PIECE.fullmatch(tok):
                    table.append(bytes([int(tok[3:5], 16)]))
                else:
                    for old, new in spelling.replace:
                        tok = tok.replace(old, new)
                    table.append(tok.encode("utf-8"))
            self._bytes = table
        return self._bytes

    # -- chat ---------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Mapping], add_generation_prompt: bool = True,
                            **extra) -> str:
        """Render ``messages`` (dicts with "role" and "content") with the model's chat template.

        Rendered as transformers does (sandboxed Jinja, trim_blocks, lstrip_blocks),
        with ``bos_token`` and ``eos_token`` defined; ``extra`` are further template variables.
        When ``encode`` adds the BOS itself (Gemma, Llama 2), a BOS the template writes first
        is left out, as llama.cpp does, so ``encode`` of the result starts with one BOS.

        Raises:
            ValueError: the model has no chat template.
        """
        if not self.chat_template:
            raise ValueError(f"{self.name} has no chat template; format the prompt yourself")
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        names = {"bos_token": self.bos_id, "eos_token": self.eos_id}
        tokens = {k: self.bpe.id_to_token(v) for k, v in names.items() if v is not None}
        text = self._template.render(messages=[dict(m) for m in messages],
                                     add_generation_prompt=add_generation_prompt, **tokens, **extra)
        bos = tokens.get("bos_token")
        if bos and text.startswith(bos) and self.bpe.encode("").ids[:1] == [self.bos_id]:
            text = text[len(bos):]
        return text

    # -- files --------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (Hugging Face layout)."""
        folder = Path(folder)
        super().save(folder)
        cfg = {"bos_token": None if self.bos_id is None else self.bpe.id_to_token(self.bos_id),
               "eos_token": None if self.eos_id is None else self.bpe.id_to_token(self.eos_id),
               "chat_template": self.chat_template}
        (folder / CONFIG).write_text(json.dumps(cfg, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> "PretrainedTokenizer":
        """Read ``tokenizer.json`` and, if present, ``tokenizer_config.json`` / ``chat_template.jinja``.

        Raises:
            CheckpointError: the folder has no ``tokenizer.json`` or an unreadable config.
        """
        from tokenizers import Tokenizer as HFTokenizer

        folder = Path(folder)
        if not (folder / TOKENIZER).is_file():
            raise CheckpointError(f"{folder} has no {TOKENIZER}")
        bpe = HFTokenizer.from_file(str(folder / TOKENIZER))
        cfg = {}
        if (folder / CONFIG).is_file():
            try:
                cfg = json.loads((folder / CONFIG).read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{folder / CONFIG} is corrupt ({e})") from None

        def token_id(key):
            tok = cfg.get(key)
            if isinstance(tok, dict):
                tok = tok.get("content")
            return None if tok is None else bpe.token_to_id(tok)

        template = cfg.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if template is None and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        return cls(bpe, bos_id=token_id("bos_token"), eos_id=token_id("eos_token"),
                   chat_template=template, name=str(folder))


def _compile_template(source: str):
    """A chat template compiled the way transformers compiles it."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters, which templates do not expect.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def load_tokenizer(folder: Path) -> Tokenizer:
    """The tokenizer saved in ``folder``: pretrained (with tokenizer_config.json), BPE, or bytes."""
    folder = Path(folder)
    if (folder / CONFIG).is_file():
        return PretrainedTokenizer.load(folder)
    return Tokenizer.load(folder)
