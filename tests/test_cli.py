import subprocess
import sys

from seqlab.cli import main


def test_mixers_lists_each_with_cost(capsys):
    assert main(["mixers"]) == 0
    out = capsys.readouterr().out
    for name in ("attention", "gru", "lstm"):
        assert name in out
    assert "options:" in out


def test_demo_reports_agreeing_faces(capsys):
    assert main(["demo", "--dim", "32", "--length", "48"]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("between the faces: ")[1].split()[0])
    assert diff < 1e-3
    assert "the two faces agree" in out


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "seqlab.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout
