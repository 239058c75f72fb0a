"""scikit-learn's digits written into each format the file probe reads (for the tests).

Digits: 1797 images of 8x8 pixels in 0..16, labels 0..9, shipped with scikit-learn.
The regression target is an image's mean intensity (exact in float64 and in ``repr``).
"""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1797, 64) float64 pixels, (1797,) int64 labels, (1797,) float64 mean intensities."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.asarray(d.data, dtype=np.float64)
    return x, np.asarray(d.target, dtype=np.int64), x.mean(axis=1)


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


def _number(v) -> str:
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def write_csv(path: Path, x: np.ndarray, y, *, label: str = "first", header: bool = False,
              delimiter: str = ",") -> Path:
    """One row per sequence; the label first or last, an optional header p0..p63 + label."""
    rows = []
    if header:
        names = [f"p{j}" for j in range(x.shape[1])]
        rows.append(["label", *names] if label == "first" else [*names, "label"])
    for xi, yi in zip(x, y):
        values = [_number(v) for v in xi]
        rows.append([_number(yi), *values] if label == "first" else [*values, _number(yi)])
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
    return path


def idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype("uint8"): 0x08, np.dtype("int8"): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    arr = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    head = struct.pack(">I", (codes[arr.dtype] << 8) | arr.ndim)   # 0x0803: ubyte, 3 dims
    return head + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_pair(folder: Path, images: np.ndarray, labels: np.ndarray, *, prefix: str = "train",
                   gz: bool = False) -> Path:
    """``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte`` (MNIST's names)."""
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    img = folder / f"{prefix}-images-idx3-ubyte{suffix}"
    img.write_bytes(pack(idx_bytes(images)))
    (folder / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(pack(idx_bytes(labels)))
    return img


def ts_text(x: np.ndarray, y, *, classes: list[str] | None = None, name: str = "Digits",
            equal: bool = True, extra_header: str = "") -> str:
    """A .ts file: classification (``classes`` given) or regression (@targetLabel true).

    ``x``: (N, T) univariate, (N, T, C) multivariate, or a list of (T_i, C) arrays.
    """
    seqs = [np.asarray(s).reshape(len(s), -1) for s in x]
    dims = seqs[0].shape[1]
    head = [f"@problemName {name}", "@timeStamps false", "@missing false",
            f"@univariate {'true' if dims == 1 else 'false'}"]
    if dims > 1:
        head.append(f"@dimensions {dims}")
    head.append(f"@equalLength {'true' if equal else 'false'}")
    if equal:
        head.append(f"@seriesLength {len(seqs[0])}")
    head.append(f"@classLabel true {' '.join(classes)}" if classes is not None else "@targetLabel true")
    if extra_header:
        head.append(extra_header)
    lines = ["# written by the seqlab tests", *head, "@data"]
    for s, label in zip(seqs, y):
        parts = [",".join(_number(v) for v in s[:, c]) for c in range(dims)]
        lines.append(":".join(parts) + ":" + _number(label))
    return "\n".join(lines) + "\n"
