"""The results file: only a results file is appended to, writability is checked before any
cell trains, and each record is one whole-line write, fsynced."""

import json
import os

import pytest

import seqlab.bench.run as run_module
from seqlab.bench.results import BenchError, append_record, check_results_file, read_results
from seqlab.cli import main

RUN = ["bench", "run", "test-copy-first", "--mixers", "lstm", "--dims", "8", "--smoke", "--quiet"]
RECORD = '{"key": "a", "probe": "p", "status": "ok", "metrics": {}}\n'


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a cell trained before --out was checked")

    monkeypatch.setattr(run_module, "run_cell", refuse)


@pytest.mark.parametrize("name, content", [
    ("config.json", '{\n  "model": {"dim": 64},\n  "lr": 0.001\n}\n'),
    ("train.py", "import seqlab\nprint('hello')\n"),
    ("one.json", '{"lr": 0.001}\n'),
    ("metrics.jsonl", '{"event": "train", "step": 1, "loss": 2.0}\n'),
    ("mixed.jsonl", RECORD + "# a comment someone added\n"),
], ids=["pretty-json", "python", "json-without-key", "other-json-lines", "record-then-text"])
def test_another_kind_of_file_is_refused_and_left_alone(tmp_path, capsys, no_training, name,
                                                        content):
    out = tmp_path / name
    out.write_text(content)
    assert main(RUN + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqlab bench: error: --out ") and "is not a results file" in err
    assert str(out) in err and "choose another --out" in err and "Traceback" not in err
    assert out.read_text() == content


def test_a_binary_file_is_refused(tmp_path):
    out = tmp_path / "blob"
    out.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(BenchError, match="not a results file \\(not UTF-8 text\\)"):
        check_results_file(out)


@pytest.mark.parametrize("where", ["folder", "below-a-file"])
def test_an_unwritable_out_exits_2_before_any_cell_trains(tmp_path, capsys, no_training, where):
    if where == "folder":
        out, expected = tmp_path, "is a folder, not a results file"
    else:
        (tmp_path / "f").write_text("x")
        out, expected = tmp_path / "f" / "sub" / "r.jsonl", "cannot be created"
    assert main(RUN + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize("content", ["", "\n", RECORD, RECORD + '{"key": "b", "sta',
                                     RECORD + '{"ke\n' + RECORD, '{"key": "b"'],
                         ids=["empty", "blank", "one-record", "torn-last", "torn-middle",
                              "only-torn"])
def test_results_files_and_new_files_are_accepted(tmp_path, content):
    out = tmp_path / "r.jsonl"
    check_results_file(out)            # new: fine, and nothing is created by the check
    assert not out.exists()
    out.write_text(content)
    check_results_file(out)
    check_results_file(tmp_path / "new" / "deeper" / "r.jsonl")   # folders made at first append


def test_a_results_file_written_by_the_bench_is_appended_to(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(RUN + ["--out", str(out)]) == 0
    assert main(RUN + ["--dims", "4", "--out", str(out)]) == 0   # a second sweep, same file
    assert [r["dim"] for r in read_results(out).records] == [8, 4]


def test_each_record_is_one_write_of_a_whole_line_then_fsync(tmp_path, monkeypatch):
    out = tmp_path / "r.jsonl"
    out.write_text(RECORD + '{"key": "b", "sta')   # a line a kill cut short
    writes, syncs = [], []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd) or real_fsync(fd))
    append_record(out, {"key": "c", "status": "ok"})
    assert writes == [b'\n{"key": "c", "status": "ok"}\n'] and len(syncs) == 1
    assert [r["key"] for r in read_results(out).records] == ["a", "c"]


def test_a_failed_append_is_a_bench_error_carrying_the_record(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.jsonl"

    def disk_full(path, record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_module, "append_record", disk_full)
    assert main(RUN + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot append to" in err and "No space left on device" in err
    assert '"key": ' in err and "Traceback" not in err
    json.loads(err.split("the cell's record was: ", 1)[1])   # whole, usable JSON
