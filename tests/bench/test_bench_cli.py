"""``seqlab bench``: run, report and probes end to end, and their error messages."""

import json

import pytest

from seqlab.cli import main

RUN = ["bench", "run", "test-copy-first", "--mixers", "attention,lstm", "--dims", "8,16", "--smoke",
       "--quiet", "--set", "model.mixer_options.attention.heads=2", "--set", "model.mlp_hidden=16"]


def test_run_then_report(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(RUN + ["--lengths", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 cells run (0 diverged, 0 failed), 0 already finished" in printed
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 4
    cfg = recs[0]["config"]
    assert cfg["train"]["steps"] == 8 and cfg["train"]["batch_size"] == 8          # --smoke
    assert cfg["model"] == {"mixer_options": {"attention": {"heads": 2}}, "mlp_hidden": 16}
    assert cfg["eval_lengths"] == [16]
    assert recs[0]["command"].startswith("seqlab bench run test-copy-first --mixers attention,lstm")

    assert main(RUN + ["--lengths", "16", "--out", str(out)]) == 0
    assert "0 cells run (0 diverged, 0 failed), 4 already finished" in capsys.readouterr().out
    # Explicit flags beat --smoke's budget and make new cells.
    assert main(RUN + ["--lengths", "16", "--steps", "3", "--dims", "8", "--out", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 6 and recs[-1]["config"]["train"]["steps"] == 3

    assert main(["bench", "report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "and 2 plots" in capsys.readouterr().out
    assert (tmp_path / "rep" / "report.md").is_file()
    assert (tmp_path / "rep" / "test-copy-first-accuracy-vs-length.png").is_file()


def test_several_learning_rates_make_a_cell_each(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(RUN + ["--mixers", "lstm", "--dims", "8", "--lr", "1e-3,1e-2", "--out", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["config"]["train"]["lr"] for r in recs) == [1e-3, 1e-2]
    assert "--lr 1e-3,1e-2" in recs[0]["command"]


def test_probes_lists_registered_probes(capsys):
    assert main(["bench", "probes"]) == 0
    out = capsys.readouterr().out
    assert "test-copy-first" in out and "lm" in out and "test-first-class" in out and "classify" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "no-such-probe", "--mixers", "attention"], "unknown probe 'no-such-probe'"),
    (["run", "test-copy-first", "--mixers", "atention"],
     "mixer 'atention' (in 'atention') is not registered"),
    (["run", "test-copy-first", "--mixers", " , "], "--mixers is empty"),
    (["run", "test-copy-first", "--mixers", "lstm", "--dims", "16,x"],
     "--dims '16,x' is not allowed: expected comma-separated ints >= 1, e.g. --dims 32,64"),
    (["run", "test-copy-first", "--mixers", "lstm", "--lengths", "1"], "--lengths '1' is not allowed"),
    (["run", "test-copy-first", "--mixers", "lstm", "--set", "optim.lr=1"],
     "--set optim.… is not allowed: the sections are probe"),
    (["run", "test-copy-first", "--mixers", "lstm", "--set", "train.lr=-1"],
     "ProbeTrainConfig.lr = -1.0 is not allowed: expected a positive number"),
    (["run", "test-copy-first", "--mixers", "lstm", "--set", "probe.vocab=1"],
     "TinyConfig.vocab = 1 is not allowed"),
    (["run", "test-copy-first", "--mixers", "attention", "--dims", "6"],
     "cell attention d=6: dim = 6 does not divide into heads = 4"),
    (["report", "/nonexistent/r.jsonl"], "results file '/nonexistent/r.jsonl' does not exist"),
    (["run", "test-copy-first", "--mixers", "lstm", "--lr", "1e-3,0"],
     "--lr '1e-3,0' is not allowed: expected comma-separated positive numbers"),
    (["run", "test-copy-first", "--mixers", "lstm", "--set", "train.stop_at_accuracy=2"],
     "ProbeTrainConfig.stop_at_accuracy = 2"),
], ids=["probe", "mixer", "no-mixers", "dims", "lengths", "set-section", "train-value", "probe-value",
        "heads", "report-missing", "lr-list", "stop-at"])
def test_bad_input_exits_2_with_the_problem_named(argv, message, capsys, tmp_path):
    out = ["--out", str(tmp_path / "r.jsonl")] if argv[0] == "run" else []
    assert main(["bench", *argv, *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqlab bench: error: ") and message in err
    assert not (tmp_path / "r.jsonl").exists()   # nothing ran


def test_missing_required_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "run", "test-copy-first"])
    assert e.value.code == 2 and "--mixers" in capsys.readouterr().err
