"""`seqlab demo --quick` end to end: the three parts are there, and they say what they should."""

import json
import re

import pytest

import seqlab.demo
from seqlab import mixers
from seqlab.cli import main


def _check_screen(out: str, folder) -> None:
    faces = dict(re.findall(r"(\w+) (\d\.?\d*e[-+]\d+)", out.split("1. Two faces")[1].split("2.")[0]))
    assert sorted(faces) == mixers.names()                 # every registered mixer, once
    assert all(float(e) < 1e-9 for e in faces.values())
    for racer in seqlab.demo.RACERS:
        row = re.search(rf"^   {racer}\s+([\d. ]+?)\s+state", out, re.M)
        assert row, racer
        assert all(0.0 <= float(a) <= 1.0 for a in row.group(1).split())
    for strategy, same in (("greedy", "-"), ("prompt-lookup", "yes"), ("speculative", "yes")):
        assert re.search(rf"^   {strategy}\s+[\d.]+\s+[\d.]+x\s+[\d.]+\s+{same}$", out, re.M), strategy
    assert (folder / "demo.png").stat().st_size > 10_000
    saved = json.loads((folder / "demo.json").read_text())
    assert sorted(saved["faces"]) == mixers.names()
    assert "seqlab serve smollm2" in out


@pytest.mark.slow
def test_demo_quick(tmp_path, capsys):
    rc = main(["demo", "--quick", "--out", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    _check_screen(out, tmp_path / "demo")
    assert rc == 0


def test_demo_quick_without_smollm2_decodes_the_race_models(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(seqlab.demo, "_load_smollm2", lambda: None)
    rc = main(["demo", "--quick", "--out", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    _check_screen(out, tmp_path / "demo")
    assert "SmolLM2 is not installed" in out
    assert rc == 0


def test_demo_out_that_is_a_file_exits_2(tmp_path, capsys):
    taken = tmp_path / "afile"
    taken.write_text("keep me")
    assert main(["demo", "--quick", "--out", str(taken)]) == 2
    assert f"--out {taken} cannot be created" in capsys.readouterr().err
    assert taken.read_text() == "keep me"
