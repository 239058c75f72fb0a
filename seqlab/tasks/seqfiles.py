"""Labelled sequences from the files users have: NumPy arrays, CSV, MNIST's idx, UCR/UEA ``.ts``.

One reader per format, each returning a :class:`SeqData`: inputs ``x`` as float32
``(N, T, C)`` (N sequences, T steps, C channels per step) and one label per sequence,
``y``: int64 class ids for ``task="classify"`` (the label each id stands for is kept in
``classes``) or float64 targets for ``task="regress"``. :func:`read` picks the reader
from the file's first bytes and its name.

Formats (a ``.gz`` file of any of them is decompressed on the fly):

* ``.npz`` (``np.savez(path, x=X, y=y)``): an array ``x`` (or ``X``) of shape (N, T) or
  (N, T, C) and labels ``y`` (or ``Y``) of shape (N,): numbers or strings (a fixed-width
  string array; object arrays need pickle and are refused).
* ``.npy``: one array holds only the inputs, (N, T) or (N, T, C); the labels come from
  ``labels_path``, a second ``.npy`` of shape (N,). A single (N, T + 1) array with the
  label in its last column is *not* read: nothing in the file tells a label column from
  a last time step, so guessing would silently train on the wrong thing.
* CSV (also ``.tsv`` and whitespace-separated ``.txt``, as in the UCR archive): one
  sequence per row, the label in one column (``label_column``: ``"first"``, the UCR
  layout and MNIST-as-CSV's, ``"last"``, a header name or a 0-based index; negative
  counts from the end). The first row is a header when a field outside the label column
  is not a number, or its label is not a number while the next row's is
  (``header="auto"``), or as ``header`` says. The delimiter is the first
  of ``,`` tab ``;`` found in the first row, else runs of whitespace. With ``channels=C``
  a row's values are C per step, step-major (``X.reshape(N, -1)`` of an (N, T, C) array).
* MNIST idx: the images file (``*-images-idx3-ubyte``; magic ``0x0803``) and its labels
  (``*-labels-idx1-ubyte``, magic ``0x0801``), found beside it by that name or given as
  ``labels_path``. The magic number gives the element type (ubyte, byte, short, int,
  float, double; big-endian) and the number of dimensions. An (N, H, W) image becomes
  H steps of W channels (``image_sequence="rows"``) or H*W steps of 1 channel
  (``"pixels"``, the sequential-MNIST task).
* UCR/UEA ``.ts`` (the sktime/aeon text format): header tags ``@problemName``,
  ``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``, ``@missing``,
  ``@timeStamps`` (``true`` is refused), ``@classLabel true c1 c2 ...`` (classification;
  class ids follow the order listed) or ``@targetLabel true`` (regression), then
  ``@data`` and one case per line: dimensions separated by ``:``, values by ``,``, ``?``
  for a missing value, the label after the last ``:``.

Lengths: sequences shorter than the longest are padded at the end. In a dense array
(npz, npy, CSV) trailing NaN mark the padding, as in the UCR archive's CSV files; in a
``.ts`` file with ``@equalLength false`` each line has its own length. ``lengths`` holds
each sequence's length and ``x`` is 0 beyond it. NaN before a sequence's end is a
missing value and stays NaN (see :func:`first_missing`).

Class ids: the ``@classLabel`` order of a ``.ts`` file; otherwise labels that are all
whole numbers in numeric order (so digits 0-9 keep their ids), other labels in sorted
string order.

A malformed file raises :class:`SeqFileError` naming the file and the line, column,
field or byte at fault, e.g. ``digits.ts line 14: 63 values, expected 64`` or
``labels.idx1-ubyte: magic 2050 (0x00000802) is not an idx1 label file``.

Example:
    >>> data = read("BasicMotions_TRAIN.ts", task="classify")
    >>> data.x.shape, data.y[:3], data.classes
    ((40, 100, 6), array([0, 0, 0]), ('standing', 'running', 'walking', 'badminton'))
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from seqlab.tasks.corpus import DataError

Task = Literal["classify", "regress"]
FORMATS = ("npz", "npy", "csv", "idx", "ts")
TASKS = ("classify", "regress")
MISSING_TEXT = {"", "?", "nan", "na", "n/a", "null"}   # lower-cased text fields read as NaN

# idx element types by the third byte of the magic number (big-endian on disk).
_IDX_TYPES = {0x08: ("ubyte", ">u1"), 0x09: ("byte", ">i1"), 0x0B: ("short", ">i2"),
              0x0C: ("int", ">i4"), 0x0D: ("float", ">f4"), 0x0E: ("double", ">f8")}


class SeqFileError(DataError):
    """A sequence file that is missing, malformed or does not fit the task; the message names
    the file and the line, column or field at fault (the CLI prints it and exits 2)."""


@dataclass(frozen=True)
class SeqData:
    """Labelled sequences read from a file.

    Attributes:
        x: (N, T, C) float32 inputs; 0 after each sequence's end, NaN where a value is missing.
        y: (N,) int64 class ids in [0, len(classes)) (classify) or float64 targets (regress).
        lengths: (N,) int64 steps of each sequence (all T when they are equally long).
        classes: classify: the label each class id stands for, as text; regress: None.
        task: "classify" or "regress".
        source: the file, as given (messages name it).
        lines: (N,) int64 1-based line of each sequence in a text file, else None.
        name: the problem name a ``.ts`` header gives, else the file's stem.
    """

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray
    classes: tuple[str, ...] | None
    task: str
    source: str
    lines: np.ndarray | None = None
    name: str = ""

    def __len__(self) -> int:
        return len(self.y)

    @property
    def channels(self) -> int:
        return self.x.shape[2]

    def where(self, i: int) -> str:
        """Where sequence ``i`` is in its file: ``digits.csv line 14`` or ``x.npz item 13``."""
        if self.lines is not None:
            return f"{self.source} line {int(self.lines[i])}"
        return f"{self.source} item {i}"


# -- reading bytes and text ----------------------------------------------------------------------

def _read_bytes(path: Path, source: str) -> bytes:
    """The file's bytes, gunzipped when they start with gzip's magic number."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise SeqFileError(f"{source} {what}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SeqFileError(f"{source} cannot be read ({e.strerror or e})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise SeqFileError(f"{source} is a damaged gzip file ({e})") from None
    return data


def _text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SeqFileError(f"{source} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                           f"{e.start}); a text format (CSV, .ts) must be UTF-8") from None


def detect_format(path: str | Path) -> str:
    """The format of ``path`` from its first bytes, then its name: one of :data:`FORMATS`.

    Raises:
        SeqFileError: the file is missing or unreadable.
    """
    path = Path(path)
    return _detect(path, _read_bytes(path, str(path)))


def _detect(path: Path, data: bytes) -> str:
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return "npz"
    if len(data) >= 4 and data[0] == 0 and data[1] == 0 and data[2] in _IDX_TYPES:
        return "idx"
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".ts"):
        return "ts"
    if "idx" in name and not name.endswith((".csv", ".tsv", ".txt")):
        return "idx"   # named like one but without an idx magic: read_idx says what is wrong
    if name.endswith((".npy", ".npz")):
        return name[-3:]
    for line in data[:65536].splitlines():
        line = line.strip()
        if line and not line.startswith(b"#"):
            return "ts" if line.startswith(b"@") else "csv"
    return "csv"


# -- labels ---------------------------------------------------------------------------------------

def _as_numbers(labels: np.ndarray) -> np.ndarray | None:
    """float64 labels, or None when some text label is not a number."""
    if labels.dtype.kind in "biuf":
        return labels.astype(np.float64)
    try:
        return np.char.strip(labels.astype(str)).astype(np.float64)
    except ValueError:
        return None


def _first_non_number(labels: np.ndarray) -> int:
    for i, text in enumerate(labels.tolist()):
        try:
            float(text)
        except (TypeError, ValueError):
            return i
    return -1


def encode_labels(labels: np.ndarray, task: str, where: Callable[[int], str],
                  declared: tuple[str, ...] | None = None) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Labels as the task needs them: (int64 class ids, class texts) or (float64 targets, None).

    Args:
        labels: (N,) numbers or strings, as read.
        where: names sequence ``i`` in messages (``digits.csv line 14``).
        declared: the classes a file's header lists, in id order (``.ts`` ``@classLabel``).

    Raises:
        SeqFileError: a label the task cannot take, named with where it is and the fix.
    """
    if task not in TASKS:
        raise SeqFileError(f"task {task!r} is not allowed: expected one of {list(TASKS)}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biufUS":
        raise SeqFileError(f"{where(0)}: labels of dtype {labels.dtype} are not allowed: expected "
                           "numbers or strings")
    if labels.dtype.kind == "S":
        labels = labels.astype(str)
    numbers = _as_numbers(labels)
    if task == "regress":
        if numbers is None:
            i = _first_non_number(labels)
            raise SeqFileError(f"{where(i)}: label {str(labels[i]).strip()!r} is not a number; "
                               "--task regress needs numeric targets (class names need --task classify)")
        bad = np.flatnonzero(~np.isfinite(numbers))
        if bad.size:
            raise SeqFileError(f"{where(int(bad[0]))}: target {numbers[bad[0]]} is not a finite "
                               "number; fill or drop that sequence")
        return numbers, None
    if declared is not None:
        ids = {c: k for k, c in enumerate(declared)}
        text = np.char.strip(labels.astype(str)).tolist()
        y = np.empty(len(text), dtype=np.int64)
        for i, t in enumerate(text):
            if t not in ids:
                listed = " ".join(declared[:12]) + (" ..." if len(declared) > 12 else "")
                raise SeqFileError(f"{where(i)}: class label {t!r} is not among those the header "
                                   f"declares (@classLabel true {listed})")
            y[i] = ids[t]
        return y, tuple(declared)
    if numbers is not None:
        bad = np.flatnonzero(~np.isfinite(numbers))
        if bad.size:
            raise SeqFileError(f"{where(int(bad[0]))}: label {numbers[bad[0]]} is not a class")
        frac = np.flatnonzero(numbers != np.round(numbers))
        if frac.size:
            i = int(frac[0])
            raise SeqFileError(f"{where(i)}: label {float(numbers[i])!r} is not a whole number, so it is no "
                               "class id; for a numeric target use --task regress")
        values, y = np.unique(numbers.astype(np.int64), return_inverse=True)
        return y.astype(np.int64).reshape(-1), tuple(str(int(v)) for v in values)
    text = np.char.strip(labels.astype(str))
    empty = np.flatnonzero(text == "")
    if empty.size:
        raise SeqFileError(f"{where(int(empty[0]))}: the label is empty")
    values, y = np.unique(text, return_inverse=True)
    return y.astype(np.int64).reshape(-1), tuple(str(v) for v in values)


# -- packing sequences -----------------------------------------------------------------------------

def _pack_dense(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, C) with trailing all-NaN steps as padding -> float32 x (0 there, and only as long
    as the longest sequence) and lengths."""
    present = ~np.isnan(x).all(axis=2)                                   # (N, T)
    T = x.shape[1]
    lengths = np.where(present.any(axis=1), T - np.argmax(present[:, ::-1], axis=1), 0)
    x = x[:, :max(int(lengths.max(initial=0)), 1)].astype(np.float32)   # T = the longest
    x[np.arange(x.shape[1])[None, :] >= lengths[:, None]] = 0.0
    return x, lengths.astype(np.int64)


def _pack_list(seqs: list[np.ndarray], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences (T_i, C) of several lengths -> (N, max T, C) float32 padded with 0, lengths."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    x = np.zeros((len(seqs), int(lengths.max(initial=0)), channels), dtype=np.float32)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
    return x, lengths


def _finish(x: np.ndarray, lengths: np.ndarray, labels: np.ndarray, task: str, source: str, *,
            lines: np.ndarray | None = None, name: str = "",
            declared: tuple[str, ...] | None = None) -> SeqData:
    partial = SeqData(x=x, y=np.zeros(0), lengths=lengths, classes=None, task=task, source=source,
                      lines=lines, name=name)
    if len(lengths) == 0:
        raise SeqFileError(f"{source} holds no sequences")
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise SeqFileError(f"{partial.where(int(empty[0]))}: the sequence is empty (no value "
                           "that is not missing)")
    y, classes = encode_labels(labels, task, partial.where, declared)
    return SeqData(x=x, y=y, lengths=lengths, classes=classes, task=task, source=source,
                   lines=lines, name=name or Path(source).name.split(".")[0])


def _inputs_array(arr: np.ndarray, source: str, what: str) -> np.ndarray:
    """(N, T) or (N, T, C) numbers -> float64 (N, T, C)."""
    if arr.dtype.kind not in "biuf":
        raise SeqFileError(f"{source}: {what} has dtype {arr.dtype}; the inputs must be numbers")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or 0 in arr.shape:
        raise SeqFileError(f"{source}: {what} has shape {arr.shape}; expected (N, T) or (N, T, C) "
                           "with N sequences of T steps of C channels")
    return arr.astype(np.float64, copy=False)


def _labels_array(arr: np.ndarray, n: int, source: str, what: str) -> np.ndarray:
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise SeqFileError(f"{source}: {what} has shape {arr.shape}; expected one label per "
                           f"sequence, shape ({n},)")
    if len(arr) != n:
        raise SeqFileError(f"{source}: {what} holds {len(arr)} labels for {n} sequences")
    return arr


# -- .npz and .npy -------------------------------------------------------------------------------

def _load_npy(data: bytes, source: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise SeqFileError(f"{source} holds an object array, which only pickle can read (and "
                               "pickle runs code); save strings as a fixed-width array: "
                               "np.asarray(labels, dtype=str)") from None
        raise SeqFileError(f"{source} is not a readable .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise SeqFileError(f"{source} is not a readable .npy file ({e})") from None


def read_npz(path: str | Path, task: Task = "classify") -> SeqData:
    """Sequences ``x`` (or ``X``) and labels ``y`` (or ``Y``) from an ``.npz`` archive.

    Example:
        >>> np.savez("digits.npz", x=images.reshape(-1, 64), y=labels)
        >>> read_npz("digits.npz").x.shape
        (1797, 64, 1)
    """
    path, source = Path(path), str(path)
    data = _read_bytes(path, source)
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise SeqFileError(f"{source} is not a readable .npz archive ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SeqFileError(f"{source} holds a single array (a .npy file); name it .npy")
    with archive:
        names = list(archive.files)

        def get(keys: tuple[str, str], what: str) -> tuple[str, np.ndarray]:
            for key in keys:
                if key in names:
                    try:
                        return key, archive[key]
                    except ValueError as e:
                        if "pickle" in str(e):
                            raise SeqFileError(
                                f"{source}: array {key!r} is an object array, which only pickle can "
                                "read (and pickle runs code); save strings as a fixed-width array: "
                                "np.asarray(labels, dtype=str)") from None
                        raise SeqFileError(f"{source}: array {key!r} cannot be read ({e})") from None
                    except (OSError, EOFError, zipfile.BadZipFile) as e:
                        raise SeqFileError(f"{source}: array {key!r} cannot be read ({e})") from None
            raise SeqFileError(f"{source} has no array named {keys[0]!r} or {keys[1]!r} ({what}); it "
                               f"holds {names}. Save with np.savez(path, x=X, y=y)")

        xk, x = get(("x", "X"), "the sequences")
        yk, y = get(("y", "Y"), "the labels")
    x = _inputs_array(x, source, f"array {xk!r}")
    y = _labels_array(y, len(x), source, f"array {yk!r}")
    x, lengths = _pack_dense(x)
    return _finish(x, lengths, y, task, source)


def read_npy(path: str | Path, task: Task = "classify", *,
             labels_path: str | Path | None = None) -> SeqData:
    """Sequences from one ``.npy`` array, labels from another (``labels_path``, shape (N,)).

    Raises:
        SeqFileError: no ``labels_path`` (a single array holds no labels that can be told
            apart from the data), or an array of the wrong shape.
    """
    path, source = Path(path), str(path)
    x = _load_npy(_read_bytes(path, source), source)
    if not labels_path:
        raise SeqFileError(f"{source} holds one array, the sequences; give their labels as a second "
                           ".npy of shape (N,) with --set probe.labels_path=LABELS.npy, or save both "
                           "in one file: np.savez('data.npz', x=X, y=y). (A label packed into the "
                           "last column is not read: nothing tells it from a last time step.)")
    lsource = str(labels_path)
    y = _load_npy(_read_bytes(Path(labels_path), lsource), lsource)
    x = _inputs_array(x, source, "the array")
    y = _labels_array(y, len(x), lsource, "the array")
    x, lengths = _pack_dense(x)
    return _finish(x, lengths, y, task, source)


# -- CSV ------------------------------------------------------------------------------------------

def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _number_or_missing(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text.strip().lower() in MISSING_TEXT


def _delimited_rows(text: str) -> tuple[str | None, list[tuple[int, list[str]]]]:
    """(delimiter or None for whitespace, [(line, fields)]) without blank rows."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    delim = next((d for d in (",", "\t", ";") if d in first), None)
    rows = []
    if delim is None:
        for n, line in enumerate(text.split("\n"), 1):
            fields = line.split()
            if fields:
                rows.append((n, fields))
        return None, rows
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    start = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                rows.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:
        raise SeqFileError(f"line {reader.line_num}: {e}") from None
    return delim, rows


def _column_index(label_column: str, header: list[str] | None, width: int, source: str) -> int:
    spec = label_column.strip()
    if spec == "first":
        return 0
    if spec == "last":
        return width - 1
    try:
        index = int(spec)
    except ValueError:
        index = None
    if index is not None:
        if not -width <= index < width:
            raise SeqFileError(f"{source}: label_column {index} is outside the {width} columns "
                               f"(0 .. {width - 1}, or negative from the end)")
        return index % width
    if header is None:
        raise SeqFileError(f"{source}: label_column {spec!r} names a column, but the file has no "
                           "header row; use first, last or a 0-based index")
    names = [h.strip() for h in header]
    if spec not in names:
        shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        raise SeqFileError(f"{source}: no column named {spec!r} in the header ({shown})")
    return names.index(spec)


def read_csv(path: str | Path, task: Task = "classify", *, label_column: str = "first",
             header: Literal["auto", "yes", "no"] = "auto", channels: int = 1) -> SeqData:
    """One sequence per row of a delimited text file, the label in ``label_column``.

    Example:
        >>> read_csv("digits.csv", label_column="last").x.shape    # 64 values + a label per row
        (1797, 64, 1)
    """
    path, source = Path(path), str(path)
    text = _text(_read_bytes(path, source), source)
    try:
        delim, rows = _delimited_rows(text)
    except SeqFileError as e:
        raise SeqFileError(f"{source} {e}") from None
    if not rows:
        raise SeqFileError(f"{source} holds no rows")
    if header not in ("auto", "yes", "no"):
        raise SeqFileError(f"header {header!r} is not allowed: expected auto, yes or no")
    if channels < 1:
        raise SeqFileError(f"channels {channels} is not allowed: expected an int >= 1")
    width = len(rows[0][1])
    if width < 2:
        raise SeqFileError(f"{source} line {rows[0][0]}: one field; a row needs a label and at least "
                           "one value" + ("" if delim else " (no , tab or ; found to split at)"))
    head = rows[0][1]
    names = head if header == "yes" else None
    if header == "auto":
        spec = label_column.strip()
        if spec in ("first", "last") or spec.lstrip("-").isdigit():
            col = _column_index(spec, None, width, source)
            named = not all(_number_or_missing(f) for j, f in enumerate(head) if j != col)
            # Columns named 0, 1, ..., label: only the label column tells the header from data.
            numbered = (len(rows) > 1 and len(rows[1][1]) == width and _number(rows[1][1][col])
                        and not _number(head[col]))
            if named or numbered:
                names = head
        else:
            names = head       # a column named by label_column needs a header
    col = _column_index(label_column, names, width, source)
    data_rows = rows[1:] if names is not None else rows
    if not data_rows:
        raise SeqFileError(f"{source} has a header row but no data rows")
    num_values = width - 1
    if num_values % channels:
        raise SeqFileError(f"{source}: {num_values} values per row do not split into channels = "
                           f"{channels}")
    values = np.empty((len(data_rows), num_values), dtype=np.float64)
    labels, lines = [], np.empty(len(data_rows), dtype=np.int64)
    keep = [j for j in range(width) if j != col]
    for i, (line, fields) in enumerate(data_rows):
        if len(fields) != width:
            raise SeqFileError(f"{source} line {line}: {len(fields)} fields, expected {width} "
                               f"(as in line {rows[0][0]})")
        labels.append(fields[col])
        lines[i] = line
        row = [fields[j] for j in keep]
        try:
            values[i] = row
        except ValueError:
            values[i] = _parse_fields(row, lambda k: _column_name(keep[k], names),
                                      f"{source} line {line}")
    x, lengths = _pack_dense(values.reshape(len(data_rows), -1, channels))
    return _finish(x, lengths, np.array(labels, dtype=str), task, source, lines=lines)


def _column_name(j: int, names: list[str] | None) -> str:
    return f"column {j + 1}" + (f" ({names[j].strip()!r})" if names is not None else "")


def _parse_fields(fields: list[str], name: Callable[[int], str], where: str) -> np.ndarray:
    """Slow path of a row that numpy could not convert: missing markers, or the bad field named."""
    out = np.empty(len(fields), dtype=np.float64)
    for k, f in enumerate(fields):
        try:
            out[k] = float(f)
        except ValueError:
            if f.strip().lower() not in MISSING_TEXT:
                raise SeqFileError(f"{where}, {name(k)}: {f.strip()!r} is not a number") from None
            out[k] = math.nan
    return out


# -- MNIST idx ------------------------------------------------------------------------------------

def read_idx_array(path: str | Path) -> np.ndarray:
    """The array of an idx file (``train-images-idx3-ubyte`` and the like), native byte order.

    Raises:
        SeqFileError: a bad magic number, or a size that does not match the header.
    """
    return _idx_array(path)[0]


def _idx_array(path: str | Path) -> tuple[np.ndarray, int]:
    path, source = Path(path), str(path)
    data = _read_bytes(path, source)
    if len(data) < 4:
        raise SeqFileError(f"{source}: {len(data)} bytes, too short for an idx header (4-byte magic)")
    magic = int.from_bytes(data[:4], "big")
    if data[0] or data[1]:
        raise SeqFileError(f"{source}: magic {magic} (0x{magic:08x}) is not an idx magic number "
                           "(its first two bytes must be 0)")
    if data[2] not in _IDX_TYPES:
        raise SeqFileError(f"{source}: magic {magic} (0x{magic:08x}): type byte 0x{data[2]:02x} is not "
                           "an idx type (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float, "
                           "0x0E double)")
    ndim = data[3]
    type_name, dtype = _IDX_TYPES[data[2]]
    start = 4 + 4 * ndim
    if ndim == 0 or len(data) < start:
        raise SeqFileError(f"{source}: magic {magic} (0x{magic:08x}) says {ndim} dimensions, but "
                           + ("an idx array needs at least one" if ndim == 0 else
                              f"the file ends at byte {len(data)}, inside the {start}-byte header"))
    dims = struct.unpack(f">{ndim}I", data[4:start])
    count = math.prod(dims)
    need = count * np.dtype(dtype).itemsize
    if len(data) - start != need:
        shape = " x ".join(map(str, dims))
        problem = "the file is truncated" if len(data) - start < need else "extra bytes follow"
        raise SeqFileError(f"{source}: {len(data) - start} bytes of data after the header, expected "
                           f"{need} for {shape} {type_name} (magic {magic}); {problem}")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(dims)
    return arr.astype(arr.dtype.newbyteorder("=")), magic


def idx_labels_beside(images: str | Path) -> Path | None:
    """The labels file MNIST's naming puts beside ``images`` (``-images-idx3`` ->
    ``-labels-idx1``, with or without ``.gz``), if it exists."""
    images = Path(images)
    name = images.name.replace("images", "labels").replace("idx3", "idx1")
    if name == images.name:
        return None
    base = name.removesuffix(".gz")
    for candidate in (images.with_name(name), images.with_name(base), images.with_name(base + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: str | Path, task: Task = "classify", *, labels_path: str | Path | None = None,
             image_sequence: Literal["rows", "pixels"] = "rows") -> SeqData:
    """Images from an idx file as sequences, labels from the idx1 file beside it.

    An (N, H, W) array becomes H steps of W channels (``"rows"``) or H*W steps of one
    channel (``"pixels"``); further dimensions (colour) join the channels. An (N, T) array is
    T steps of one channel either way.

    Example:
        >>> read_idx("train-images-idx3-ubyte", image_sequence="pixels").x.shape
        (60000, 784, 1)
    """
    source = str(path)
    if image_sequence not in ("rows", "pixels"):
        raise SeqFileError(f"image_sequence {image_sequence!r} is not allowed: expected rows or pixels")
    images, _ = _idx_array(path)
    if images.ndim == 1:
        raise SeqFileError(f"{source} is an idx1 file (one dimension: labels), not images; give the "
                           "images file (idx3) as the data file, with its labels beside it")
    if labels_path is None or str(labels_path) == "":
        labels_path = idx_labels_beside(path)
        if labels_path is None:
            raise SeqFileError(f"{source}: no labels file beside it (MNIST names it like the images "
                               "file with 'labels' for 'images' and 'idx1' for 'idx3'); give it with "
                               "--set probe.labels_path=FILE")
    lsource = str(labels_path)
    labels, magic = _idx_array(labels_path)
    if labels.ndim != 1:
        raise SeqFileError(f"{lsource}: magic {magic} (0x{magic:08x}) is not an idx1 label file: it "
                           f"has {labels.ndim} dimensions {labels.shape}, labels have 1 (magic 2049 "
                           "for ubyte labels)")
    if len(labels) != len(images):
        raise SeqFileError(f"{lsource} holds {len(labels)} labels but {source} holds {len(images)} "
                           "images")
    n, dims = images.shape[0], images.shape[1:]
    if len(dims) == 1:
        shape = (n, dims[0], 1)
    elif image_sequence == "rows":
        shape = (n, dims[0], math.prod(dims[1:]))
    else:
        shape = (n, dims[0] * dims[1], math.prod(dims[2:]))
    x = np.ascontiguousarray(images.reshape(shape), dtype=np.float32)
    return _finish(x, np.full(n, shape[1], dtype=np.int64), labels, task, source)


# -- UCR/UEA .ts ----------------------------------------------------------------------------------

_TS_BOOLEANS = ("timestamps", "missing", "univariate", "equallength", "targetlabel")
_TS_INTS = ("dimensions", "serieslength")


def _ts_header(lines: list[str], source: str) -> tuple[dict, int]:
    """Header tags (lower-cased keys) and the index of the first line after ``@data``."""
    tags: dict = {}
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {i + 1}"
        if not line.startswith("@"):
            raise SeqFileError(f"{where}: data before the @data line (header lines start with @)")
        parts = line.split()
        key = parts[0][1:].lower()
        args = parts[1:]
        if key == "data":
            if args:
                raise SeqFileError(f"{where}: @data takes no value; the data start on the next line")
            return tags, i + 1
        if key in _TS_BOOLEANS:
            if len(args) != 1 or args[0].lower() not in ("true", "false"):
                raise SeqFileError(f"{where}: {parts[0]} takes true or false, not {' '.join(args)!r}")
            tags[key] = args[0].lower() == "true"
        elif key in _TS_INTS:
            if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
                raise SeqFileError(f"{where}: {parts[0]} takes a positive int, not {' '.join(args)!r}")
            tags[key] = int(args[0])
        elif key == "classlabel":
            if not args or args[0].lower() not in ("true", "false"):
                raise SeqFileError(f"{where}: @classLabel takes true and the class labels, or false")
            if args[0].lower() == "true" and len(args) < 2:
                raise SeqFileError(f"{where}: @classLabel true must list the class labels, "
                                   "e.g. @classLabel true 0 1 2")
            if len(set(args[1:])) != len(args[1:]):
                dup = next(a for a in args[1:] if args[1:].count(a) > 1)
                raise SeqFileError(f"{where}: @classLabel lists {dup!r} twice")
            tags["classlabel"] = tuple(args[1:]) if args[0].lower() == "true" else None
        elif key == "problemname":
            tags[key] = " ".join(args)
        # Other tags (e.g. a tool's own) carry nothing a reader needs, as in sktime/aeon.
    raise SeqFileError(f"{source}: no @data line; a .ts file is header lines (@problemName, "
                       "@classLabel, ...) then @data then one case per line")


def read_ts(path: str | Path, task: Task = "classify") -> SeqData:
    """Cases of a UCR/UEA ``.ts`` file (the format of timeseriesclassification.com).

    Example:
        >>> data = read_ts("FloodModeling1_TRAIN.ts", task="regress")   # @targetLabel true
    """
    path, source = Path(path), str(path)
    lines = _text(_read_bytes(path, source), source).split("\n")
    tags, start = _ts_header(lines, source)
    if tags.get("timestamps"):
        raise SeqFileError(f"{source}: @timeStamps true is not supported (values must be plain "
                           "numbers, one per step)")
    declared = tags.get("classlabel")
    has_target = tags.get("targetlabel", False)
    if declared is not None and has_target:
        raise SeqFileError(f"{source}: the header declares both @classLabel true and @targetLabel "
                           "true; a case has one label")
    if declared is None and not has_target:
        raise SeqFileError(f"{source}: the header declares no labels (@classLabel true c1 c2 ... for "
                           "classes, @targetLabel true for a numeric target): nothing to learn")
    if task == "regress" and declared is not None:
        raise SeqFileError(f"{source}: the header declares @classLabel (a classification problem with "
                           f"classes {' '.join(declared[:8])}{' ...' if len(declared) > 8 else ''}); "
                           "use --task classify")
    if task == "classify" and has_target:
        raise SeqFileError(f"{source}: the header declares @targetLabel true (a regression problem); "
                           "use --task regress")
    channels = tags.get("dimensions", 1 if tags.get("univariate") else None)
    channel_rule = ("@dimensions" if "dimensions" in tags else "@univariate true") if channels else ""
    equal = tags.get("equallength", True)
    length = tags.get("serieslength")
    length_rule = "@seriesLength" if length else ""
    seqs, labels, numbers = [], [], []
    for i in range(start, len(lines)):
        line = lines[i].strip()
        if not line or line.startswith("#"):
            continue
        n = i + 1
        where = f"{source} line {n}"
        parts = line.split(":")
        if len(parts) < 2:
            raise SeqFileError(f"{where}: no ':' before the label; a case is dimension:...:label")
        dims = parts[:-1]
        if channels is None:
            channels, channel_rule = len(dims), f"as on line {n}"
        if len(dims) != channels:
            raise SeqFileError(f"{where}: {len(dims)} dimensions, expected {channels} ({channel_rule})")
        case = []
        for d, text in enumerate(dims):
            if not text.strip():
                raise SeqFileError(f"{where}: dimension {d + 1} is empty")
            fields = text.split(",")
            # A case's dimensions are equally long; with @equalLength true so are all cases.
            want, rule = (len(case[0]), "as dimension 1") if d else (length if equal else None,
                                                                     length_rule)
            if want is not None and len(fields) != want:
                name = f" in dimension {d + 1}" if channels > 1 else ""
                raise SeqFileError(f"{where}: {len(fields)} values{name}, expected {want} ({rule})")
            if equal and length is None:
                length, length_rule = len(fields), f"as on line {n}; @equalLength true"
            try:
                values = np.array([("nan" if f.strip() == "?" else f) for f in fields],
                                  dtype=np.float64)
            except ValueError:
                values = _parse_fields(fields, lambda k: f"value {k + 1}",
                                       where + (f", dimension {d + 1}" if channels > 1 else ""))
            case.append(values)
        seqs.append(np.stack(case, axis=1))          # (T_i, C)
        labels.append(parts[-1].strip())
        numbers.append(n)
    if not seqs:
        raise SeqFileError(f"{source}: no cases after @data")
    x, lengths = _pack_list(seqs, channels)
    # A trailing missing value ('?') shortens the case, as trailing NaN do in a dense array.
    x_nan = np.where(np.arange(x.shape[1])[None, :, None] < lengths[:, None, None], x, np.nan)
    x, lengths = _pack_dense(x_nan)
    return _finish(x, lengths, np.array(labels, dtype=str), task, source,
                   lines=np.array(numbers, dtype=np.int64), name=tags.get("problemname", ""),
                   declared=declared)


# -- any format -----------------------------------------------------------------------------------

def read(path: str | Path, task: Task = "classify", *, format: str = "auto",
         labels_path: str | Path | None = None, label_column: str = "first",
         header: Literal["auto", "yes", "no"] = "auto", channels: int = 1,
         image_sequence: Literal["rows", "pixels"] = "rows") -> SeqData:
    """Read ``path`` with the reader its format needs (``format="auto"``: :func:`detect_format`).

    The keyword options go to the readers that take them: ``labels_path`` (npy, idx),
    ``label_column``, ``header``, ``channels`` (csv), ``image_sequence`` (idx).

    Raises:
        SeqFileError: the file is missing or malformed (named with the line or field), or its
            labels do not fit ``task``.
    """
    if format == "auto":
        format = detect_format(path)
    if format == "npz":
        return read_npz(path, task)
    if format == "npy":
        return read_npy(path, task, labels_path=labels_path)
    if format == "csv":
        return read_csv(path, task, label_column=label_column, header=header, channels=channels)
    if format == "idx":
        return read_idx(path, task, labels_path=labels_path, image_sequence=image_sequence)
    if format == "ts":
        return read_ts(path, task)
    raise SeqFileError(f"format {format!r} is not allowed: expected auto or one of {list(FORMATS)}")


def concat(parts: list[SeqData]) -> SeqData:
    """Sequences of several files (e.g. a UCR ``_TRAIN`` and ``_TEST`` file) as one SeqData.

    Lengths are padded to the longest; class ids are re-mapped onto the first file's classes
    followed by those only later files have, in their order.

    Raises:
        SeqFileError: the files differ in channels or task.
    """
    first = parts[0]
    for p in parts[1:]:
        if p.channels != first.channels:
            raise SeqFileError(f"{p.source} has {p.channels} channels per step but {first.source} "
                               f"has {first.channels}")
        if p.task != first.task:
            raise SeqFileError(f"{p.source} is read for {p.task} but {first.source} for {first.task}")
    T = max(p.x.shape[1] for p in parts)
    xs = [np.pad(p.x, ((0, 0), (0, T - p.x.shape[1]), (0, 0))) for p in parts]
    classes = None
    ys = [p.y for p in parts]
    if first.task == "classify":
        order = list(first.classes)
        for p in parts[1:]:
            order += [c for c in p.classes if c not in order]
        ids = {c: k for k, c in enumerate(order)}
        ys = [np.array([ids[c] for c in p.classes], dtype=np.int64)[p.y] for p in parts]
        classes = tuple(order)
    if len(parts) == 1:
        return first
    return SeqData(x=np.concatenate(xs), y=np.concatenate(ys),
                   lengths=np.concatenate([p.lengths for p in parts]), classes=classes,
                   task=first.task, source=" + ".join(p.source for p in parts), name=first.name)


def first_missing(data: SeqData) -> str | None:
    """Where the first missing or infinite value before a sequence's end is, or None.

    Example:
        >>> first_missing(data)
        'digits.csv line 14: step 17, channel 1 is missing (NaN)'
    """
    bad = ~np.isfinite(data.x)
    if not bad.any():
        return None
    i, t, c = (int(v) for v in np.argwhere(bad)[0])
    value = data.x[i, t, c]
    what = "missing (NaN)" if np.isnan(value) else f"{value}"
    return f"{data.where(i)}: step {t + 1}, channel {c + 1} is {what}"


# -- fixed splits ---------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


def _splitmix64(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def shuffle_keys(n: int, seed: int) -> np.ndarray:
    """(n,) uint64 pseudo-random keys, a pure function of (n, seed).

    SplitMix64 of the index, so a split never depends on a library's random stream (NumPy
    keeps no promise that ``Generator`` streams stay the same across versions).
    """
    base = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        return _splitmix64(np.arange(n, dtype=np.uint64) + base)


def split(y: np.ndarray, *, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1,
          stratify: bool = True) -> dict[str, np.ndarray]:
    """Fixed train/val/test indices: sorted int64 arrays that partition ``range(len(y))``.

    The test split takes ``round(test_fraction * N)`` sequences, val the next
    ``round(val_fraction * N)``, train the rest. With ``stratify`` (classification) each class
    is spread evenly: class c's members, in key order, get the quantiles (k + 0.5) / N_c and
    the splits are cut from all sequences sorted by quantile, so each class's share of
    every split is its share of the data (to within one sequence). The same (y, seed,
    fractions) give the same split on every machine and run.

    Example:
        >>> parts = split(data.y, seed=0, test_fraction=0.2, val_fraction=0.1)
        >>> x_test = data.x[parts["test"]]
    """
    n = len(y)
    keys = shuffle_keys(n, seed)
    if stratify:
        q = np.empty(n, dtype=np.float64)
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            members = members[np.argsort(keys[members], kind="stable")]
            q[members] = (np.arange(len(members)) + 0.5) / len(members)
        order = np.lexsort((keys, q))
    else:
        order = np.argsort(keys, kind="stable")
    num_test, num_val = round(test_fraction * n), round(val_fraction * n)
    return {"test": np.sort(order[:num_test]), "val": np.sort(order[num_test:num_test + num_val]),
            "train": np.sort(order[num_test + num_val:])}
