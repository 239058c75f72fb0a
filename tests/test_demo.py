"""`seqlab demo` end to end with a seconds-long budget: the report and the stream are there."""

import re

from seqlab.cli import main


def test_demo_short_budget(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["demo", "--minutes", "0.15", "--out", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    before = float(re.search(r"untrained model\s+([\d.]+)", out).group(1))
    after = float(re.search(r"trained model \(\d+ steps\)\s+([\d.]+)", out).group(1))
    entropy = float(re.search(r"unigram entropy of the corpus\s+([\d.]+)", out).group(1))
    assert 4.0 < entropy < 5.5            # real Python source, not random bytes (8 bits)
    assert after < before - 1.0           # even a few steps learn something
    assert rc == (0 if after <= 3.0 else 1)
    assert "def read_lines(path):" in out and "tokens/s while generating" in out
    assert (tmp_path / "demo" / "latest" / "model.safetensors").is_file()
