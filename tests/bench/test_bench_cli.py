"""``seqlab bench``: run, report and probes end to end, and their error messages."""

import json

import pytest

from seqlab.cli import build_parser, main

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


def test_each_seed_is_a_cell_of_its_own(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(RUN + ["--mixers", "lstm", "--dims", "8", "--seeds", "0,1,2", "--out", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["seed"] for r in recs) == [0, 1, 2]
    assert sorted(r["config"]["seed"] for r in recs) == [0, 1, 2]
    assert len({r["key"] for r in recs}) == 3 and "--seeds 0,1,2" in recs[0]["command"]
    assert len({r["final_loss"] for r in recs}) == 3     # the seed reached the training
    assert main(["bench", "report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "| lstm | 8 | 8 | 0,1,2 | " in (tmp_path / "rep" / "report.md").read_text()


def test_probes_lists_registered_probes(capsys):
    assert main(["bench", "probes"]) == 0
    out = capsys.readouterr().out
    assert "test-copy-first" in out and "lm" in out and "test-first-class" in out and "classify" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "no-such-probe", "--mixers", "attention"], "unknown probe 'no-such-probe'"),
    (["run", "test-copy-first", "--mixers", "atention"],
     "CellConfig.mixer[0] = atention: unknown mixer 'atention'; known mixers: aaren, atlas, attention"),
    (["run", "test-copy-first", "--mixers", "lstm,attention(windw=4,heads=2)"],
     "CellConfig.mixer[0] = attention(windw=4,heads=2): AttentionConfig has no option 'windw'"),
    (["run", "test-copy-first", "--mixers", "attention(window=4"],
     "CellConfig.mixer = 'attention(window=4' is not a layer pattern: expected ')'"),
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
     "cell attention d=6: LMConfig.layers[0] = attention: dim = 6 does not divide into heads = 4"),
    (["report", "/nonexistent/r.jsonl"], "results file '/nonexistent/r.jsonl' does not exist"),
    (["run", "test-copy-first", "--mixers", "lstm", "--lr", "1e-3,0"],
     "--lr '1e-3,0' is not allowed: expected comma-separated positive numbers"),
    (["run", "test-copy-first", "--mixers", "lstm", "--set", "train.stop_at_accuracy=2"],
     "ProbeTrainConfig.stop_at_accuracy = 2"),
], ids=["probe", "mixer", "option", "syntax", "no-mixers", "dims", "lengths", "set-section", "train-value", "probe-value",
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


def test_mixers_split_at_top_level_commas_only():
    from seqlab.bench.cli import sweep_from_args

    args = build_parser().parse_args(["bench", "run", "test-copy-first", "--layers", "3", "--mixers",
                                      "lstm, attention(window=4,heads=2)*2+lstm ,hybrid"])
    sweep = sweep_from_args(args)
    assert sweep.mixers == ("lstm", "attention(window=4,heads=2)*2+lstm", "hybrid")
    layers = [c.lm_config(c.build_probe()).layers for c in sweep.cells()]
    assert [len(ls) for ls in layers] == [3, 3, 3]
    assert [s.options.get("window") for s in layers[1]] == [4, 4, None]


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("45m", 2700), ("2h", 7200),
                                           ("1h30m", 5400), ("0.5h", 1800)])
def test_time_limit_durations(text, seconds):
    from seqlab.bench.cli import duration
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "10x", "", "0", "m"])
def test_a_bad_time_limit_exits_2_naming_the_value(text, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["bench", "run", "test-copy-first", "--mixers", "lstm", "--time-limit", text,
              "--out", str(tmp_path / "r.jsonl")])
    assert e.value.code == 2 and "--time-limit" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()


def test_time_limit_reached_is_reported(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(["bench", "run", "test-copy-first", "--mixers", "lstm,attention(heads=2)",
                 "--dims", "8", "--steps", "3", "--batch-size", "4", "--time-limit", "0.001",
                 "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "time limit reached" in text and "run the same command again" in text
