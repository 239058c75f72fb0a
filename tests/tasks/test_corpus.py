"""Corpora: paths, globs, binary files, the split by file, deterministic batches, BPE."""

import numpy as np
import pytest
import torch

from seqlab.tasks.corpus import DataConfig, DataError, collect_files, load_corpus


@pytest.fixture
def textdir(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQLAB_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "text"
    d.mkdir()
    for i in range(40):
        (d / f"f{i:02d}.py").write_text(f"# file {i}\n" + "def f(x):\n    return x * %d\n" % i * 30)
    (d / "blob.bin").write_bytes(bytes(range(256)) * 10)          # binary: NUL bytes
    (d / "latin.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)  # not UTF-8
    return d


def test_folder_skips_binary_and_undecodable(textdir):
    c = load_corpus(DataConfig(paths=(str(textdir),)), progress=False)
    assert c.stats["skipped_files"] == 2 and c.stats["text_files"] == 40
    assert 0 < len(c.val) < len(c.train)
    assert c.stats["train_tokens"] + c.stats["val_tokens"] == sum(
        (textdir / f"f{i:02d}.py").stat().st_size for i in range(40))


def test_split_is_by_file_and_stable(textdir):
    cfg = DataConfig(paths=(str(textdir),), extensions=(".py",))
    a = load_corpus(cfg, progress=False)
    b = load_corpus(cfg, progress=False)  # from the cache, memory-mapped
    assert isinstance(b.train, np.memmap)
    assert np.array_equal(a.val, b.val)
    val_text = bytes(a.val).decode()
    # whole files land in validation: each held-out file's header appears with its body
    headers = [line for line in val_text.splitlines() if line.startswith("# file")]
    assert headers and all(val_text.count(h + "\n") == 1 for h in headers)


def test_globs_and_missing_paths(textdir):
    files = collect_files(DataConfig(paths=(str(textdir / "f1*.py"),)))
    assert [f.name for f in files] == [f"f{i}.py" for i in range(10, 20)]
    with pytest.raises(DataError, match="no such file or folder: '.*nope'"):
        collect_files(DataConfig(paths=(str(textdir / "nope"),)))
    with pytest.raises(DataError, match="matches no files"):
        collect_files(DataConfig(paths=(str(textdir / "*.rs"),)))
    empty = textdir.parent / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no files found"):
        collect_files(DataConfig(paths=(str(empty),)))
    with pytest.raises(DataError, match="none of the 1 files holds readable text"):
        load_corpus(DataConfig(paths=(str(textdir / "blob.bin"),)), progress=False)


def test_batches_depend_only_on_seed_and_step(textdir):
    c = load_corpus(DataConfig(paths=(str(textdir),)), progress=False)
    x1, y1 = c.batch("train", 5, 8, 32, seed=1)
    x2, _ = c.batch("train", 5, 8, 32, seed=1)
    x3, _ = c.batch("train", 6, 8, 32, seed=1)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are inputs shifted by one
    part, _ = c.batch("train", 5, 8, 32, seed=1, rows=slice(4, 8))
    assert torch.equal(part, x1[4:8])          # a process's share is a slice of the global batch


def test_bpe_tokenizer_round_trips_and_counts_bytes(textdir):
    c = load_corpus(DataConfig(paths=(str(textdir),), tokenizer="bpe", bpe_vocab=300), progress=False)
    assert c.vocab_size == 300 and c.train.dtype == np.uint16
    text = "def f(x):\n    return x * 7\n"
    ids = c.tokenizer.encode(text)
    assert len(ids) < len(text.encode())
    assert c.tokenizer.decode_bytes(ids) == text.encode()
    assert c.tokenizer.token_byte_lengths()[ids].sum() == len(text.encode())


def test_default_corpus_is_the_standard_library():
    files = collect_files(DataConfig())
    assert len(files) > 1000 and all(f.suffix == ".py" for f in files)
    assert any(f.name == "textwrap.py" for f in files)
    assert not any("site-packages" in f.parts for f in files)
