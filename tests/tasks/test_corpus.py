"""Corpora: paths, globs, binary files, the split by file, deterministic batches, BPE."""

import numpy as np
import pytest
import torch

from seqlab.tasks.corpus import DataConfig, DataError, collect_files, load_corpus, longest_files


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


def test_longest_files_are_load_corpus_splits_longest_first(textdir):
    """The two splits partition the corpus as load_corpus splits it, each longest first."""
    for i in range(40):   # sizes that differ, so the order is a real check
        (textdir / f"f{i:02d}.py").write_text(f"# file {i}\n" + "x = 1\n" * (i + 1))
    cfg = DataConfig(paths=(str(textdir),), extensions=(".py",))
    train, val = longest_files("train", cfg), longest_files("val", cfg)
    assert sorted(train + val) == collect_files(cfg) and val and train
    for split in (train, val):
        sizes = [f.stat().st_size for f in split]
        assert sizes == sorted(sizes, reverse=True)
    c = load_corpus(cfg, progress=False)
    assert c.stats["val_tokens"] == sum(f.stat().st_size for f in val)


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


def cache_folder(tmp_path):
    (folder,) = (tmp_path / "cache" / "corpora").iterdir()
    return folder


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "meta", "no-manifest"])
def test_a_damaged_cache_is_detected_and_rebuilt(textdir, tmp_path, capsys, damage):
    cfg = DataConfig(paths=(str(textdir),))
    want = load_corpus(cfg, progress=False)
    want_train, want_val = np.array(want.train), np.array(want.val)
    del want
    folder = cache_folder(tmp_path)
    assert (folder / "manifest.json").is_file()
    train = folder / "train.bin"
    if damage == "truncate":
        train.write_bytes(train.read_bytes()[:1000])
    elif damage == "overwrite":
        data = bytearray(train.read_bytes())
        data[100:5100] = bytes(5000)
        train.write_bytes(bytes(data))
    elif damage == "meta":
        (folder / "meta.json").write_text("{")
    else:
        (folder / "manifest.json").unlink()   # a cache of an older seqlab: unverifiable
    got = load_corpus(cfg, progress=False)
    err = capsys.readouterr().err
    assert "fails its check" in err and "rebuilding it" in err
    assert np.array_equal(got.train, want_train) and np.array_equal(got.val, want_val)
    assert [p.name for p in (tmp_path / "cache" / "corpora").iterdir()] == [folder.name]
    load_corpus(cfg, progress=False)
    assert capsys.readouterr().err == ""   # the rebuilt cache passes


def test_an_unwritable_cache_is_a_data_error(textdir, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SEQLAB_CACHE", str(blocker / "sub"))   # a path below a regular file
    with pytest.raises(DataError, match="cannot write the corpus cache.*set SEQLAB_CACHE"):
        load_corpus(DataConfig(paths=(str(textdir),)), progress=False)
