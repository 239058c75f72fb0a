"""``metrics.jsonl``: one JSON object per line, each appended with a single write.

A process killed mid-line leaves a torn last line; :func:`repair_metrics`
drops it (and every record past the step a run resumes from, which the
resumed run logs again) before new lines are appended, so no record is
glued to another and no step appears twice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

FILE = "metrics.jsonl"


def repair_metrics(path: str | os.PathLike, last_step: int) -> int:
    """Keep the valid records of ``path`` with ``step <= last_step``; returns how many lines
    were dropped. The file is rewritten atomically, and only when something changes."""
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    kept, dropped = [], 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except ValueError:   # torn by a kill, or not UTF-8
            rec = None
        step = rec.get("step", 0) if isinstance(rec, dict) else None
        if not isinstance(step, int) or step > last_step:
            dropped += 1
            continue
        kept.append(raw + b"\n")
    new = b"".join(kept)
    if new != data:
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


class MetricsLog:
    """JSON lines in ``out/metrics.jsonl``, mirrored to TensorBoard when it is installed."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.fd = os.open(out / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if enabled else None
        self.tb = None
        if enabled:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is not None:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        # One write of the whole line: a kill leaves it whole or missing, never half-glued.
        os.write(self.fd, (json.dumps({"time": time.time(), **rec}) + "\n").encode())
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{rec['event']}/{k}", v, rec["step"])

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tb is not None:
            self.tb.close()


__all__ = ["FILE", "MetricsLog", "repair_metrics"]
