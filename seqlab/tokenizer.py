"""Tokenizers: bytes (the default), a BPE trained on a corpus, or a pretrained
model's byte-level BPE with its special ids and chat template.

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
from collections.abc import Mapping, Sequence
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


class PretrainedTokenizer(Tokenizer):
    """A pretrained model's byte-level BPE tokenizer with its special ids and chat template.

    Args:
        bpe: a ``tokenizers.Tokenizer`` (byte-level BPE).
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

    # -- building -----------------------------------------------------------------
    @classmethod
    def from_gguf_vocab(cls, *, model: str, pre: str | None, tokens: Sequence[str],
                        merges: Sequence[str], token_types: Sequence[int] | None = None,
                        bos_id: int | None = None, eos_id: int | None = None,
                        add_bos: bool = False, add_eos: bool = False,
                        chat_template: str | None = None, name: str = "GGUF file") -> "PretrainedTokenizer":
        """Rebuild the tokenizer a GGUF file describes (``tokenizer.ggml.*`` metadata).

        Args:
            model: ``tokenizer.ggml.model``; only ``"gpt2"`` (byte-level BPE) is supported.
            pre: ``tokenizer.ggml.pre``, llama.cpp's name for the split before BPE.
            tokens, merges, token_types: the vocabulary in id order, the merges
                (``"a b"`` strings, best first) and llama.cpp's type of each token.
            bos_id, eos_id, add_bos, add_eos: special ids, and whether encode adds them.
            chat_template: ``tokenizer.chat_template`` or None.

        Raises:
            CheckpointError: an unsupported tokenizer model or pre-tokenizer (named,
                with the supported ones).
        """
        from tokenizers import AddedToken, decoders, models, processors
        from tokenizers import Tokenizer as HFTokenizer

        if model != "gpt2":
            raise CheckpointError(f"{name} has tokenizer.ggml.model = {model!r}, which is not supported; "
                                  "supported: 'gpt2' (byte-level BPE)")
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
        types = list(token_types) if token_types is not None else [TOKEN_NORMAL] * len(tokens)
        # Control tokens (<|im_start|>, <|endoftext|>) are matched whole in the text, as llama.cpp does.
        control = [AddedToken(t, special=True, normalized=False)
                   for t, ty in zip(tokens, types) if ty == TOKEN_CONTROL and t in vocab]
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
        """The bytes of ``ids``, special tokens included.

        For a byte-level vocabulary these are exact (a token may end inside a
        UTF-8 character); other vocabularies go through ``tokenizers``' decoder.
        """
        if not self._byte_level:
            return self.bpe.decode(list(map(int, ids)), skip_special_tokens=False).encode()
        table = self._token_bytes_table()
        return b"".join(table[int(i)] for i in ids)

    @property
    def _byte_level(self) -> bool:
        from tokenizers import decoders

        return isinstance(self.bpe.decoder, decoders.ByteLevel)

    def decode(self, ids) -> str:
        """``decode_bytes`` as text (an incomplete UTF-8 sequence becomes U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", "replace")

    def token_byte_lengths(self) -> np.ndarray:
        if not self._byte_level:
            return super().token_byte_lengths()
        if self._token_bytes is None:
            self._token_bytes = np.array([len(b) for b in self._token_bytes_table()], dtype=np.int64)
        return self._token_bytes

    def _token_bytes_table(self) -> list[bytes]:
        if self._bytes is None:
            inverse = {c: b for b, c in byte_alphabet().items()}
            special = {t.content for t in self.bpe.get_added_tokens_decoder().values()}
            table = []
            for i in range(self.vocab_size):
                tok = self.bpe.id_to_token(i) or ""
                if tok in special or not all(c in inverse for c in tok):
                    table.append(tok.encode("utf-8"))
                else:
                    table.append(bytes(inverse[c] for c in tok))
            self._bytes = table
        return self._bytes

    # -- chat ---------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Mapping], add_generation_prompt: bool = True,
                            **extra) -> str:
        """Render ``messages`` (dicts with "role" and "content") with the model's chat template.

        Rendered as transformers does (sandboxed Jinja, trim_blocks, lstrip_blocks),
        with ``bos_token`` and ``eos_token`` defined; ``extra`` are further template variables.

        Raises:
            ValueError: the model has no chat template.
        """
        if not self.chat_template:
            raise ValueError(f"{self.name} has no chat template; format the prompt yourself")
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        names = {"bos_token": self.bos_id, "eos_token": self.eos_id}
        tokens = {k: self.bpe.id_to_token(v) for k, v in names.items() if v is not None}
        return self._template.render(messages=[dict(m) for m in messages],
                                     add_generation_prompt=add_generation_prompt, **tokens, **extra)

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
