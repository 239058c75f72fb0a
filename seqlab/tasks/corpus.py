"""Real text corpora, read as bytes (or subword tokens) from files the user names.

The default corpus is the source code of the running interpreter's standard
library: about 30 MB of real Python present on every machine. Files are
split into train and validation *by file* (a hash of the path decides, so
the split never changes when files are added elsewhere); the token streams
are written once to a cache folder and memory-mapped. Binary or undecodable
files are skipped and counted. The cache folder carries a checksum manifest
(``seqlab/integrity.py``); a damaged or unverifiable cache is rebuilt.

Example:
    >>> corpus = load_corpus(DataConfig(paths=("src/",)))
    >>> x, y = corpus.batch("train", step=0, batch_size=8, seq_len=256, seed=1)
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import shutil
import sys
import sysconfig
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from seqlab.config import Config, require
from seqlab.integrity import check_manifest, write_manifest
from seqlab.tokenizer import Tokenizer, load_tokenizer


class DataError(ValueError):
    """Data that is missing, empty or unreadable."""


@dataclass(frozen=True)
class DataConfig(Config):
    """Where the text comes from and how it becomes tokens.

    Attributes:
        paths: files, folders (read recursively) or globs; empty = the
            standard library's source.
        extensions: only files with these suffixes (e.g. [".py"]); None = all
            files for user paths, ".py" for the standard library.
        val_fraction: share of files held out for validation.
        tokenizer: "bytes" (vocabulary 256) or "bpe" (byte-level BPE trained
            on the training files with the `tokenizers` library).
        bpe_vocab: vocabulary size of the BPE tokenizer.
        cache_dir: where token streams are cached; None = $SEQLAB_CACHE or
            ~/.cache/seqlab.
    """

    paths: tuple[str, ...] = ()
    extensions: tuple[str, ...] | None = None
    val_fraction: float = 0.05
    tokenizer: Literal["bytes", "bpe"] = "bytes"
    bpe_vocab: int = 4096
    cache_dir: str | None = None

    def validate(self) -> None:
        require(0 < self.val_fraction < 1, self, "val_fraction", "a number between 0 and 1")
        require(257 <= self.bpe_vocab <= 65535, self, "bpe_vocab", "an int in [257, 65535]")


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def collect_files(cfg: DataConfig) -> list[Path]:
    """Expand the configured paths into a sorted list of files."""
    if not cfg.paths:
        root = stdlib_dir()
        exts = cfg.extensions or (".py",)
        files = [p for p in root.rglob("*") if p.suffix in exts and p.is_file()
                 and "site-packages" not in p.parts]
        return sorted(files)
    files: list[Path] = []
    for spec in cfg.paths:
        p = Path(spec).expanduser()
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(q for q in p.rglob("*") if q.is_file())
        elif any(ch in spec for ch in "*?["):
            matched = [Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True)]
            if not matched:
                raise DataError(f"the glob {spec!r} matches no files; check the pattern "
                                "(quote it so the shell does not expand it)")
            files.extend(m for m in matched if m.is_file())
        else:
            raise DataError(f"no such file or folder: {spec!r}; give a file, a folder or a glob")
    if cfg.extensions:
        files = [f for f in files if f.suffix in cfg.extensions]
    files = sorted(set(files))
    if not files:
        raise DataError(f"no files found under {list(cfg.paths)}"
                        + (f" with extensions {list(cfg.extensions)}" if cfg.extensions else ""))
    return files


def _read_text(path: Path) -> bytes | None:
    """The file's bytes if it is UTF-8 text, else None (binary or undecodable)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data[:8192]:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return data


def _is_val(path: Path, fraction: float) -> bool:
    return zlib.crc32(path.name.encode() + str(path.parent.name).encode()) % 10_000 < fraction * 10_000


def longest_files(split: Literal["train", "val"], cfg: DataConfig | None = None) -> list[Path]:
    """The files of one split of ``cfg``'s corpus (the fixed split ``load_corpus`` trains and
    validates on), longest first: the long documents memory and long-context benchmarks read."""
    cfg = cfg or DataConfig()
    files = [f for f in collect_files(cfg) if _is_val(f, cfg.val_fraction) == (split == "val")]
    return sorted(files, key=lambda f: f.stat().st_size, reverse=True)


@dataclass
class Corpus:
    """Memory-mapped train and validation token streams plus their tokenizer."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    tokenizer: "Tokenizer"
    stats: dict = field(default_factory=dict)

    def split(self, name: str) -> np.ndarray:
        return self.train if name == "train" else self.val

    def batch(self, split: str, step: int, batch_size: int, seq_len: int, seed: int,
              rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``step``: random windows drawn from a generator seeded by (seed, step).

        Because a batch depends only on (seed, step), resuming at step N
        continues the exact data stream; ``rows`` picks this process's share
        of the global batch under data parallelism.
        """
        data = self.split(split)
        if len(data) <= seq_len + 1:
            raise DataError(f"the {split} split holds {len(data)} tokens, fewer than one window of "
                            f"seq_len + 1 = {seq_len + 1}; use a shorter --seq-len or more data")
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=g)[rows]
        idx = starts.numpy()[:, None] + np.arange(seq_len + 1)
        chunk = torch.from_numpy(data[idx].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]

    def eval_windows(self, seq_len: int, max_tokens: int) -> torch.Tensor:
        """Fixed, non-overlapping validation windows of seq_len + 1 tokens: ``(N, seq_len + 1)``."""
        n = min((len(self.val) - 1) // seq_len, max(1, max_tokens // seq_len))
        if n < 1:
            raise DataError(f"the validation split holds {len(self.val)} tokens, fewer than one "
                            f"window of {seq_len + 1}; use a shorter seq_len or more data")
        idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)
        return torch.from_numpy(self.val[idx].astype(np.int64))

    def unigram_entropy_bits(self) -> float:
        """Entropy of the training split's token frequencies, in bits per byte."""
        counts = np.bincount(np.asarray(self.train[: 20_000_000]), minlength=self.vocab_size)
        p = counts[counts > 0] / counts.sum()
        bits_per_token = float(-(p * np.log2(p)).sum())
        return bits_per_token / self.tokenizer.bytes_per_token(np.asarray(self.train[: 1_000_000]))


def _cache_root(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("SEQLAB_CACHE") or Path.home() / ".cache" / "seqlab")


def _fingerprint(files: list[Path], cfg: DataConfig, tokenizer: "Tokenizer | None") -> str:
    h = hashlib.sha256()
    h.update(json.dumps([cfg.val_fraction, cfg.tokenizer, cfg.bpe_vocab]).encode())
    if tokenizer is not None and tokenizer.bpe is not None:
        h.update(tokenizer.bpe.to_str().encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_corpus(cfg: DataConfig = DataConfig(), progress: bool = True,
                tokenizer: "Tokenizer | None" = None) -> Corpus:
    """Read, split, tokenize and cache the corpus; later calls memory-map the cache.

    ``tokenizer`` (e.g. a checkpoint's) replaces the one ``cfg`` asks for, so
    a model is evaluated on text tokenized its own way.

    Raises:
        DataError: a path that does not exist, no files, or no readable text.
    """
    files = collect_files(cfg)
    folder = _cache_root(cfg) / "corpora" / _fingerprint(files, cfg, tokenizer)
    if folder.exists():
        problems = check_manifest(folder)
        if problems:
            print(f"seqlab: the corpus cache {folder} fails its check ({problems[0]}); "
                  "rebuilding it", file=sys.stderr)
            _discard(folder)
    if not folder.exists():
        _build_cache(files, cfg, folder, progress, tokenizer)
    meta = json.loads((folder / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    arrays = [np.memmap(folder / f"{s}.bin", dtype=dtype, mode="r") if meta[f"{s}_tokens"] else
              np.zeros(0, dtype=dtype) for s in ("train", "val")]
    tok = load_tokenizer(folder)
    return Corpus(arrays[0], arrays[1], tok.vocab_size, tok, stats=meta)


def _discard(folder: Path) -> None:
    """Remove a damaged cache; renamed first, so no reader sees it half-deleted."""
    trash = folder.with_name(f"{folder.name}.damaged-{os.getpid()}")
    try:
        os.replace(folder, trash)
    except FileNotFoundError:  # another process discarded it first
        return
    shutil.rmtree(trash, ignore_errors=True)


def _build_cache(files: list[Path], cfg: DataConfig, folder: Path, progress: bool,
                 tokenizer: "Tokenizer | None") -> None:
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        _write_cache(files, cfg, tmp, progress, tokenizer)
        os.replace(tmp, folder)
    except OSError as e:
        if not folder.exists():
            raise DataError(f"cannot write the corpus cache {folder} ({e.strerror or e}); set "
                            "SEQLAB_CACHE (or data.cache_dir) to a writable folder") from None
        # another process built it first: keep theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)   # also after an interruption


def _write_cache(files: list[Path], cfg: DataConfig, tmp: Path, progress: bool,
                 tokenizer: "Tokenizer | None") -> None:
    texts: dict[str, list[bytes]] = {"train": [], "val": []}
    skipped = 0
    for f in tqdm(files, desc="reading corpus", unit="file", disable=not progress, leave=False):
        data = _read_text(f)
        if data is None:
            skipped += 1
            continue
        if data:
            texts["val" if _is_val(f, cfg.val_fraction) else "train"].append(data)
    n_text = len(texts["train"]) + len(texts["val"])
    if n_text == 0:
        raise DataError(f"none of the {len(files)} files holds readable text ({skipped} binary or "
                        "non-UTF-8 files skipped); point --data at UTF-8 text files (convert "
                        "others first, e.g. iconv -f latin1 -t utf-8)")
    if not texts["val"] or not texts["train"]:
        # Too few files to split by file: hold out the tail of the text instead.
        whole = b"".join(texts["train"] + texts["val"])
        cut = int(len(whole) * (1 - cfg.val_fraction))
        texts = {"train": [whole[:cut]], "val": [whole[cut:]]}
    tmp.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tok = tokenizer
    elif cfg.tokenizer == "bpe":
        tok = Tokenizer(_train_bpe(texts["train"], cfg.bpe_vocab))
    else:
        tok = Tokenizer()
    tok.save(tmp)
    dtype = np.uint8 if tok.vocab_size <= 256 else np.uint16 if tok.vocab_size <= 65536 else np.uint32
    meta = {"files": len(files), "text_files": n_text, "skipped_files": skipped,
            "dtype": np.dtype(dtype).name, "vocab_size": tok.vocab_size}
    for split, parts in texts.items():
        n_bytes = sum(len(p) for p in parts)
        if tok.bpe is None:
            arr = np.frombuffer(b"".join(parts), dtype=np.uint8)
        else:
            enc = tok.bpe.encode_batch([p.decode("utf-8") for p in parts])
            arr = np.concatenate([np.asarray(e.ids, dtype=dtype) for e in enc])
        arr.tofile(tmp / f"{split}.bin")
        meta[f"{split}_bytes"], meta[f"{split}_tokens"] = n_bytes, int(arr.size)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    write_manifest(tmp)


def _train_bpe(texts: list[bytes], vocab: int):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    bpe = HFTokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator((t.decode("utf-8") for t in texts), trainer=trainer)
    return bpe


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    return nll_nats / (n_bytes * math.log(2))
