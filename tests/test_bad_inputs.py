"""Bad input, one row each: the command or call, what it must end with (an exit code or an
exception type), a fragment of its message, and never a traceback.

A row's command runs in-process through ``seqlab.cli.main`` (an exception escaping it would
be the traceback a user sees); ``{run}`` is a fresh copy of a tiny trained run, ``{tmp}`` a
scratch folder holding ``afile`` (a plain file, so ``{tmp}/afile/x`` cannot be created).
Rows with ``expect=None`` are inputs that look odd but are valid and must be accepted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

import seqlab
from seqlab.cli import main
from seqlab.config import ConfigError
from seqlab.decoding import PromptError, generate
from seqlab.integrity import write_manifest
from seqlab.models import build_lm
from tests.conftest import FILES, STDLIB

TINY = ["--mixers", "attention+gru", "--dim", "16", "--steps", "3", "--batch-size", "2",
        "--seq-len", "16", "--set", "train.eval_tokens=64", "--quiet"]
NO_CUDA = not torch.cuda.is_available()


@dataclass
class Row:
    id: str
    call: list[str] | Callable[..., Any]   # argv for seqlab, or a function of (run, tmp)
    expect: int | type[BaseException] | None
    fragment: str = ""
    absent: tuple[str, ...] = ()          # phrases that would mislead
    prepare: Callable[[Path, Path], None] | None = None
    marks: list = field(default_factory=list)


# -- preparations: each edits the row's own copy of the run ---------------------------------
def model_dir(run: Path) -> Path:
    return (run / "latest").resolve()


def hand_edit(run: Path, name: str, data: bytes) -> None:
    """Replace a checkpoint file as a user editing it by hand would (no checksums to match)."""
    (model_dir(run) / name).write_bytes(data)
    (model_dir(run) / "manifest.json").unlink()


def resigned(run: Path, name: str, data: bytes) -> None:
    """Replace a checkpoint file and write a manifest that matches: a file of the wrong
    structure (another version, a bug) that no checksum would catch."""
    (model_dir(run) / name).write_bytes(data)
    write_manifest(model_dir(run))


def edit_config_json(run: Path, **changes) -> None:
    cfg = json.loads((model_dir(run) / "config.json").read_text())
    cfg["config"].update(changes)
    hand_edit(run, "config.json", json.dumps(cfg).encode())


def results_file(tmp: Path) -> Path:
    rec = {"key": "p-gru-8-0", "probe": "p", "mixer": "gru", "dim": 8, "layers": 2, "seed": 0,
           "seq_len": 16, "status": "ok", "message": "", "metrics": {"accuracy": 0.5},
           "by_length": [{"seq_len": 16, "state_bytes": 64, "accuracy": 0.5}], "params": 100,
           "state_bytes": 64, "train_s": 1.0}
    (tmp / "r.jsonl").write_text(json.dumps(rec) + "\n")
    return tmp / "r.jsonl"


def lm():
    return build_lm(dim=16, layers="attention+gru").eval()


def gen(prompt, n: int | float = 2):
    return lambda run, tmp: generate(lm(), prompt, max_new_tokens=n)


ROWS = [
    # -- devices ---------------------------------------------------------------------------
    Row("train-device-tpu", ["train", *TINY, "--device", "tpu", "--out", "{tmp}/r"], 2,
        "train.device 'tpu' is not a device: expected auto, cpu, cuda or cuda:N"),
    Row("train-device-bogus", ["train", *TINY, "--device", "bogus", "--out", "{tmp}/r"], 2,
        "train.device 'bogus' is not a device"),
    Row("eval-device-tpu", ["eval", "{run}", "--device", "tpu"], 2, "--device 'tpu' is not a device"),
    Row("generate-device-bogus", ["generate", "{run}", "--prompt", "x", "--device", "bogus"], 2,
        "--device 'bogus' is not a device"),
    Row("generate-device-cuda-without-cuda", ["generate", "{run}", "--prompt", "x", "--device", "cuda"],
        2, "--device 'cuda': no CUDA device is visible", absent=("train.device",),
        marks=[pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is visible")]),
    Row("bench-device-tpu", ["bench", "run", "mqar", "--mixers", "gru", "--smoke", "--quiet",
                             "--device", "tpu", "--out", "{tmp}/b.jsonl"], 2,
        "--device 'tpu' is not a device"),
    # -- output folders ----------------------------------------------------------------------
    Row("train-out-below-a-file", ["train", *TINY, "--out", "{tmp}/afile/run"], 2,
        "cannot use run folder {tmp}/afile/run (Not a directory); choose another --out"),
    Row("train-out-impossible", ["train", *TINY, "--out", "/proc/seqlab-run"], 2,
        "cannot use run folder /proc/seqlab-run"),
    Row("bench-report-out-below-a-file", ["bench", "report", "{tmp}/r.jsonl", "--out", "{tmp}/afile/rep"],
        2, "--out {tmp}/afile/rep cannot be created", prepare=lambda run, tmp: results_file(tmp)),
    Row("bench-run-out-below-a-file", ["bench", "run", "mqar", "--mixers", "gru", "--smoke", "--quiet",
                                       "--out", "{tmp}/afile/b.jsonl"], 2, "cannot be created"),
    # -- text that is not UTF-8 ----------------------------------------------------------------
    Row("generate-prompt-not-utf8", ["generate", "{run}", "--prompt", "caf\udce9"], 2,
        "--prompt is not UTF-8 text"),
    Row("config-json-not-utf8", ["info", "{run}"], 2, "config.json is not UTF-8 text (byte 0xe9",
        prepare=lambda run, tmp: hand_edit(run, "config.json", b'{"config": "\xe9\xff"}')),
    Row("results-not-utf8", ["bench", "report", "{tmp}/r.jsonl"], 2, "is not UTF-8 text",
        prepare=lambda run, tmp: (tmp / "r.jsonl").write_bytes(b"\xff\xfe{\x00")),
    Row("config-file-not-utf8", ["train", "{tmp}/c.yaml", "--out", "{tmp}/r"], 2,
        "c.yaml is not UTF-8 text",
        prepare=lambda run, tmp: (tmp / "c.yaml").write_bytes(b"train:\n  steps: 3 # caf\xe9\n")),
    Row("data-not-utf8", ["eval", "{run}", "--data", "{tmp}/latin1.txt", "--tokens", "64",
                          "--seq-len", "16"], 2, "point --data at UTF-8 text files",
        prepare=lambda run, tmp: (tmp / "latin1.txt").write_bytes(b"caf\xe9 cr\xe8me br\xfbl\xe9e " * 40)),
    # -- run folders and their files ---------------------------------------------------------------
    Row("info-garbage-config-yaml", ["info", "{run}"], 2, "config.yaml is not a valid run config",
        prepare=lambda run, tmp: (run / "config.yaml").write_text("model: [dim: {\n")),
    Row("info-config-yaml-not-a-mapping", ["info", "{run}"], 2, "config.yaml is not a valid run config",
        prepare=lambda run, tmp: (run / "config.yaml").write_text("- attention\n- gru\n")),
    Row("resume-garbage-config-yaml", ["train", "--resume", "--out", "{run}", "--quiet"], 2,
        "config.yaml is not a valid run config",
        prepare=lambda run, tmp: (run / "config.yaml").write_text("\x00\x01: [\n")),
    Row("resume-missing-config-yaml", ["train", "--resume", "--out", "{run}", "--quiet"], 2,
        "config.yaml is missing: the run's config is needed to resume", prepare=lambda run, tmp: (run / "config.yaml").unlink()),
    Row("resume-trainer-state-wrong-structure", ["train", "--resume", "--out", "{run}", "--steps", "4",
                                                 "--quiet"], 2, "trainer.json",
        prepare=lambda run, tmp: resigned(run, "trainer.json", b'{"step": "three"}')),
    Row("resume-trainer-state-not-json", ["train", "--resume", "--out", "{run}", "--steps", "4",
                                          "--quiet"], 2, "trainer.json",
        prepare=lambda run, tmp: resigned(run, "trainer.json", b"\x80\x04K\x03.")),
    Row("resume-hand-edited-checkpoint", ["train", "--resume", "--out", "{run}", "--steps", "4",
                                          "--quiet"], 2, "has no checksum manifest",
        prepare=lambda run, tmp: hand_edit(run, "trainer.json", b'{"step": 3}')),
    Row("resume-fewer-steps", ["train", "--resume", "--out", "{run}", "--steps", "2", "--quiet"], 2,
        "is already at step 3"),
    Row("info-config-json-changed-dim", ["info", "{run}"], 2, "do not match config.json",
        absent=("corrupt",), prepare=lambda run, tmp: edit_config_json(run, dim=24)),
    Row("generate-prompt-longer-than-the-model", ["generate", "{run}", "--prompt", "x" * 20,
                                                  "--max-new-tokens", "4"], 2,
        "shorten the prompt to at most 12 tokens", absent=("max_new_tokens to 0",),
        prepare=lambda run, tmp: edit_config_json(run, max_length=16)),
    # -- numbers ---------------------------------------------------------------------------
    Row("train-lr-inf", ["train", *TINY, "--lr", "inf", "--out", "{tmp}/r"], 2,
        "TrainConfig.lr = inf is not allowed: expected a finite number"),
    Row("train-lr-nan", ["train", *TINY, "--lr", "nan", "--out", "{tmp}/r"], 2,
        "TrainConfig.lr = nan is not allowed"),
    Row("train-layers-0", ["train", *TINY, "--layers", "0", "--out", "{tmp}/r"], 2,
        "--layers 0 is not allowed: expected a positive number of layers"),
    Row("train-layers-negative", ["train", *TINY, "--layers", "-1", "--out", "{tmp}/r"], 2,
        "--layers -1 is not allowed", absent=("LMConfig.layers = ()",)),
    Row("train-dim-0", ["train", *TINY, "--dim", "0", "--out", "{tmp}/r"], 2,
        "LMConfig.dim = 0 is not allowed"),
    Row("yaml-lr-written-1e-3", lambda run, tmp: check_lr_from_yaml(tmp, "1e-3", 1e-3), None),
    Row("yaml-lr-written-3E-4", lambda run, tmp: check_lr_from_yaml(tmp, "3E-4", 3e-4), None),
    Row("yaml-lr-a-word", ["train", "{tmp}/c.yaml", "--out", "{tmp}/r"], 2,
        "TrainConfig.lr = 'fast' is not allowed: expected a finite number",
        prepare=lambda run, tmp: (tmp / "c.yaml").write_text("train:\n  lr: fast\n")),
    Row("init-with-shape-flags", ["train", "--init", "smollm2", "--mixers", "mamba", "--dim", "32",
                                  "--out", "{tmp}/r"], 2,
        "--init smollm2 takes its shape from the pretrained model: drop --mixers, --dim"),
    Row("init-with-a-model-section", ["train", "{tmp}/c.yaml", "--init", "smollm2", "--out", "{tmp}/r"],
        2, "drop the model section of {tmp}/c.yaml",
        prepare=lambda run, tmp: (tmp / "c.yaml").write_text("model:\n  dim: 32\n")),
    # -- the Python API --------------------------------------------------------------------
    Row("mixers-build-unknown", lambda run, tmp: seqlab.mixers.build("nope"), ConfigError,
        "unknown mixer 'nope'"),
    Row("mixers-build-without-dim", lambda run, tmp: seqlab.mixers.build("gru"), ConfigError,
        "needs dim"),
    Row("layers-string-is-a-pattern", lambda run, tmp: check_layers("attention", ["attention"]), None),
    Row("prompt-3d-tensor", gen(torch.zeros(1, 2, 3, dtype=torch.long)), PromptError,
        "a 3-d tensor"),
    Row("prompt-0d-tensor", gen(torch.tensor(5)), PromptError, "a 0-d tensor"),
    Row("prompt-float-tensor", gen(torch.tensor([1.0, 2.0])), PromptError, "dtype torch.float32"),
    Row("prompt-bool-tensor", gen(torch.tensor([True, False])), PromptError, "dtype torch.bool"),
    Row("prompt-string", gen("def f("), PromptError, "is a str; encode it first"),
    Row("prompt-bytes", gen(b"def f("), PromptError, "is bytes; token ids are ints"),
    Row("prompt-none", gen(None), PromptError, "prompt is None"),
    Row("prompt-float", gen(1.5), PromptError, "prompt is a float"),
    Row("prompt-list-of-floats", gen([1.5, 2.0]), PromptError, "token 0 of prompt 0 is a float"),
    Row("prompt-list-of-bools", gen([True, False]), PromptError, "token 0 of prompt 0 is a bool"),
    Row("prompt-rows-of-strings", gen([["a", "b"]]), PromptError, "token 0 of prompt 0 is a str"),
    Row("prompt-numpy-ints-accepted", lambda run, tmp: check_numpy_prompt(), None),
    Row("max-new-tokens-fraction", gen([1, 2], n=2.5), ConfigError,
        "max_new_tokens = 2.5 is not allowed"),
]


def check_lr_from_yaml(tmp: Path, text: str, value: float) -> None:
    from seqlab.train.config import RunConfig, read_config_file

    f = tmp / "c.yaml"
    f.write_text(f"train:\n  lr: {text}\n")
    assert isinstance(yaml.safe_load(f.read_text())["train"]["lr"], str)  # what PyYAML hands us
    assert RunConfig.from_dict(read_config_file(f)).train.lr == value


def check_layers(pattern: str, mixers: list[str]) -> None:
    assert [s.mixer for s in build_lm(dim=16, layers=pattern).cfg.layers] == mixers


def check_numpy_prompt() -> None:
    import numpy as np

    out = generate(lm(), np.array([[1, 2, 3]]), max_new_tokens=2)
    assert len(out.tokens[0]) == 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    data = root / "corpus"
    data.mkdir()
    for name in FILES:
        shutil.copy(STDLIB / name, data / name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQLAB_CACHE", str(root / "cache"))
        assert main(["train", *TINY, "--data", str(data), "--out", str(root / "run")]) == 0
    return root / "run", data


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=r.marks) for r in ROWS])
def test_bad_input(row: Row, trained, tmp_path, capsys, monkeypatch):
    run_src, data = trained
    monkeypatch.setenv("SEQLAB_CACHE", str(run_src.parent / "cache"))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(run_src, run, symlinks=True)
    (tmp_path / "afile").write_text("a file, not a folder\n")
    if row.prepare:
        row.prepare(run, tmp_path)
    capsys.readouterr()
    if callable(row.call):
        if row.expect is None:
            row.call(run, tmp_path)
            return
        with pytest.raises(row.expect) as info:
            row.call(run, tmp_path)
        message = str(info.value)
    else:
        argv = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in row.call]
        if argv[0] in ("train", "eval") and "--data" not in argv and argv[1:2] != ["--resume"]:
            argv += ["--data", str(data)]
        try:
            rc = main(argv)
        except SystemExit as e:   # argparse's own usage errors
            rc = e.code
        message = capsys.readouterr().err
        assert rc == row.expect, message
    fragment = row.fragment.replace("{tmp}", str(tmp_path))
    assert fragment in message
    assert "Traceback" not in message
    if os.environ.get("SHOW_MESSAGES"):
        print(f"\n{row.id}: {message.strip()[-400:]}")
    for phrase in row.absent:
        assert phrase not in message


def test_real_command_line_bytes_that_are_not_utf8(trained):
    """The prompt as a shell passes it: raw bytes in argv, decoded by Python with surrogateescape."""
    run, _ = trained
    proc = subprocess.run([os.fsencode(sys.executable), b"-m", b"seqlab", b"generate", os.fsencode(run),
                           b"--prompt", b"caf\xe9"], capture_output=True, timeout=300)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "--prompt is not UTF-8 text" in err and "Traceback" not in err
