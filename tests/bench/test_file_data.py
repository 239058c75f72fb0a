"""``seqlab bench run --data-file PATH --task classify|regress``: the user's data end to end, and
its errors (exit 2, the file and line named, no traceback)."""

import json

import numpy as np
import pytest

from seqlab.cli import main
from tests.tasks.seqfile_writers import digits, ts_text, write_npz

# A tiny cell: 8 steps of 8 pixels (the digits' rows), one 8-wide attention model, 2 steps.
TINY = ["--mixers", "attention", "--dims", "8", "--smoke", "--steps", "2", "--quiet",
        "--set", "model.mixer_options.attention.heads=2", "--set", "model.mlp_hidden=16",
        "--set", "train.eval_batch_size=64"]


@pytest.fixture
def rows(tmp_path):
    x, y, intensity = digits()
    n = 300
    return (write_npz(tmp_path / "digits.npz", x[:n].reshape(-1, 8, 8), y[:n]),
            write_npz(tmp_path / "intensity.npz", x[:n].reshape(-1, 8, 8), intensity[:n]))


def test_classify_and_regress_a_data_file_then_report(rows, tmp_path, capsys):
    cls, reg = rows
    out = tmp_path / "r.jsonl"
    assert main(["bench", "run", "--data-file", str(cls), "--task", "classify", *TINY,
                 "--out", str(out)]) == 0
    assert main(["bench", "run", "--data-file", str(reg), "--task", "regress", *TINY,
                 "--out", str(out)]) == 0
    assert "1 cells run (0 diverged, 0 failed)" in capsys.readouterr().out
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["status"] == "ok" and 0.0 <= first["metrics"]["accuracy"] <= 1.0
    assert first["probe"] == "file" and first["seq_len"] == 8
    assert first["config"]["probe_params"]["path"] == str(cls)
    assert "--data-file" in first["command"] and "--task classify" in first["command"]
    assert second["status"] == "ok" and {"mse", "rmse", "mae", "r2"} <= set(second["metrics"])
    assert main(["bench", "run", "--data-file", str(cls), *TINY, "--out", str(out)]) == 0
    assert "0 cells run (0 diverged, 0 failed), 1 already finished" in capsys.readouterr().out

    assert main(["bench", "report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "and 2 plots" in capsys.readouterr().out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## file-digits.npz" in md and "| acc @8 |" in md
    assert "## file-intensity.npz-regress" in md and "| R² @8 | MSE @8 |" in md
    assert (tmp_path / "rep" / "file-digits.npz-accuracy-by-mixer.png").is_file()
    assert (tmp_path / "rep" / "file-intensity.npz-regress-r2-by-mixer.png").is_file()


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_malformed_file_exits_2_naming_the_line(tmp_path, capsys):
    x, y, _ = digits()
    text = ts_text(x[:20], y[:20], classes=list("0123456789")).split("\n")
    text[13] = text[13].split(",", 1)[1]                       # line 14 loses its first value
    path = tmp_path / "digits.ts"
    path.write_text("\n".join(text))
    err = _error(["bench", "run", "--data-file", str(path), *TINY], capsys)
    assert f"seqlab bench: error: {path} line 14: 63 values, expected 64" in err


@pytest.mark.parametrize("argv, message", [
    (["--task", "regress"], "label 'cat' is not a number; --task regress needs numeric targets"),
    (["--task", "classify", "--set", "probe.label_column=last"],
     "FileConfig.label_column = 'last' does not apply to"),
    (["--set", "train.stop_at_accuracy=0.9", "--task", "regress", "--set", "probe.path=NUMBERS"],
     "stop_at_accuracy = 0.9 needs an accuracy, and a regression reports mse and r2"),
], ids=["regress-names", "option-of-another-format", "stop-at-regress"])
def test_wrong_task_or_option_is_explained(argv, message, tmp_path, capsys):
    x, y, intensity = digits()
    names = write_npz(tmp_path / "names.npz", x[:40].reshape(-1, 8, 8), np.array(["cat", "dog"])[y[:40] % 2])
    numbers = write_npz(tmp_path / "numbers.npz", x[:40].reshape(-1, 8, 8), intensity[:40])
    argv = [a.replace("NUMBERS", str(numbers)) for a in argv]
    err = _error(["bench", "run", "--data-file", str(names), *TINY, *argv], capsys)
    assert message in err


@pytest.mark.parametrize("argv, message", [
    (["bench", "run", "--mixers", "lstm"], "name a probe (seqlab bench probes lists them), or bring"),
    (["bench", "run", "digits", "--data-file", "x.npz", "--mixers", "lstm"],
     "--data-file reads your data with the file probe; drop the probe name 'digits'"),
    (["bench", "run", "digits", "--task", "regress", "--mixers", "lstm"], "--task goes with --data-file"),
    (["bench", "run", "--data-file", "no-such.npz", "--mixers", "lstm"], "no-such.npz does not exist"),
], ids=["no-probe", "probe-and-file", "task-alone", "missing-file"])
def test_command_line_mistakes(argv, message, capsys):
    assert message in _error(argv, capsys)
