"""Readers of seqlab.tasks.seqfiles: scikit-learn's digits written into each format come back
exactly, with the same fixed split; malformed files are named with the line or field."""

import gzip

import numpy as np
import pytest

from seqlab.tasks.seqfiles import (SeqFileError, concat, detect_format, first_missing, read,
                                   read_csv, read_idx, read_npy, read_npz, read_ts, split)
from tests.tasks.seqfile_writers import (digits, idx_bytes, ts_text, write_csv, write_idx_pair,
                                         write_npz)

DIGIT_CLASSES = tuple(str(d) for d in range(10))


def check_digits(data, x_expected, y_expected, task="classify"):
    x, y, _ = digits()
    assert data.x.dtype == np.float32 and data.x.shape == x_expected.shape
    assert np.array_equal(data.x, x_expected.astype(np.float32))
    assert np.array_equal(data.lengths, np.full(len(x), x_expected.shape[1]))
    if task == "classify":
        assert data.y.dtype == np.int64 and np.array_equal(data.y, y_expected)
        assert data.classes == DIGIT_CLASSES
    else:
        assert data.y.dtype == np.float64 and np.array_equal(data.y, y_expected)
        assert data.classes is None


# -- round trips ---------------------------------------------------------------------------------

def test_npz_round_trip(tmp_path):
    x, y, intensity = digits()
    path = write_npz(tmp_path / "digits.npz", x, y)
    assert detect_format(path) == "npz"
    check_digits(read_npz(path), x[..., None], y)
    reg = write_npz(tmp_path / "intensity.npz", x.reshape(-1, 8, 8), intensity)
    check_digits(read(reg, "regress"), x.reshape(-1, 8, 8), intensity, "regress")


def test_npy_reads_labels_from_a_second_array(tmp_path):
    x, y, _ = digits()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    check_digits(read(tmp_path / "x.npy", labels_path=tmp_path / "y.npy"), x[..., None], y)
    with pytest.raises(SeqFileError, match=r"x\.npy holds one array, the sequences; give their labels"):
        read_npy(tmp_path / "x.npy")


@pytest.mark.parametrize("label, header, delimiter, name", [
    ("first", False, ",", "digits.csv"), ("last", True, ",", "digits.csv"),
    ("first", True, "\t", "digits.tsv"), ("last", False, " ", "digits.txt")],
    ids=["first-noheader", "last-header", "tsv-header", "whitespace"])
def test_csv_round_trip(tmp_path, label, header, delimiter, name):
    x, y, _ = digits()
    path = write_csv(tmp_path / name, x, y, label=label, header=header, delimiter=delimiter)
    assert detect_format(path) == "csv"
    data = read_csv(path, label_column=label)
    check_digits(data, x[..., None], y)
    assert data.where(0) == f"{path} line {2 if header else 1}"
    if header:
        check_digits(read_csv(path, label_column="label"), x[..., None], y)


def test_csv_channels_and_regression(tmp_path):
    x, _, intensity = digits()
    path = write_csv(tmp_path / "rows.csv", x, intensity, label="last")
    data = read_csv(path, "regress", label_column="last", channels=8)   # 8 steps of 8 pixels
    check_digits(data, x.reshape(-1, 8, 8), intensity, "regress")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_pair_round_trip(tmp_path, gz):
    x, y, _ = digits()
    images = write_idx_pair(tmp_path, x.reshape(-1, 8, 8).astype(np.uint8), y.astype(np.uint8), gz=gz)
    assert detect_format(images) == "idx"
    check_digits(read_idx(images), x.reshape(-1, 8, 8), y)                        # rows
    check_digits(read(images, image_sequence="pixels"), x[..., None], y)         # pixels


def test_idx_reads_every_element_type(tmp_path):
    x, y, _ = digits()
    for dtype in (">i2", ">i4", ">f4", ">f8", "int8"):
        images = tmp_path / f"{dtype[-2:]}-images-idx3-ubyte"
        images.write_bytes(idx_bytes(x.reshape(-1, 8, 8).astype(dtype)))
        labels = tmp_path / "y.idx1"
        labels.write_bytes(idx_bytes(y.astype(np.uint8)))
        check_digits(read_idx(images, labels_path=labels), x.reshape(-1, 8, 8), y)


def test_ts_round_trip_classification_and_regression(tmp_path):
    x, y, intensity = digits()
    path = tmp_path / "digits.ts"
    path.write_text(ts_text(x, y, classes=list(DIGIT_CLASSES)))
    assert detect_format(path) == "ts"
    data = read_ts(path)
    check_digits(data, x[..., None], y)
    assert data.name == "Digits" and data.where(0) == f"{path} line 10"
    reg = tmp_path / "intensity.ts"
    reg.write_text(ts_text(x, intensity))
    check_digits(read(reg, "regress"), x[..., None], intensity, "regress")


def test_ts_multivariate_and_class_order_of_the_header(tmp_path):
    x, y, _ = digits()
    rows = x.reshape(-1, 8, 8)                                        # 8 steps, 8 dimensions
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][::-1]
    path = tmp_path / "rows.ts"
    path.write_text(ts_text(rows, [names[::-1][k] for k in y], classes=names))
    data = read_ts(path)
    assert np.array_equal(data.x, rows.astype(np.float32)) and data.classes == tuple(names)
    assert np.array_equal(data.y, 9 - y)                             # ids follow the header's order


def test_unequal_lengths_are_padded_at_the_end(tmp_path):
    x, y, _ = digits()
    seqs = [x[i, :10 + i % 50] for i in range(40)]
    path = tmp_path / "ragged.ts"
    path.write_text(ts_text(seqs, y[:40], classes=list(DIGIT_CLASSES), equal=False))
    data = read_ts(path)
    assert data.x.shape == (40, max(map(len, seqs)), 1)
    assert data.lengths.tolist() == [len(s) for s in seqs]
    for i, s in enumerate(seqs):
        assert np.array_equal(data.x[i, :len(s), 0], s) and not data.x[i, len(s):].any()
    # The same in a dense array: trailing NaN are padding (the UCR archive's CSV convention).
    dense = np.full((40, 59), np.nan)
    for i, s in enumerate(seqs):
        dense[i, :len(s)] = s
    npz = read_npz(write_npz(tmp_path / "ragged.npz", dense, y[:40]))
    assert np.array_equal(npz.x, data.x) and np.array_equal(npz.lengths, data.lengths)


def test_string_labels_map_to_sorted_ids_and_missing_values_are_found(tmp_path):
    x, y, _ = digits()
    names = np.array(["even", "odd"])[y % 2]
    data = read_npz(write_npz(tmp_path / "parity.npz", x[:50], names[:50]))
    assert data.classes == ("even", "odd") and np.array_equal(data.y, y[:50] % 2)
    assert first_missing(data) is None
    text = ts_text(x[:5], y[:5], classes=list(DIGIT_CLASSES)).split("\n")
    path = tmp_path / "missing.ts"
    row = next(i for i, line in enumerate(text) if line[:1].isdigit())
    text[row] = text[row].replace("0.0,", "?,", 1)
    path.write_text("\n".join(text))
    assert first_missing(read_ts(path)) == f"{path} line {row + 1}: step 1, channel 1 is missing (NaN)"


def test_concat_joins_class_maps(tmp_path):
    x, y, _ = digits()
    a = read_npz(write_npz(tmp_path / "a.npz", x[:20], np.array(["b", "c"])[y[:20] % 2]))
    b = read_npz(write_npz(tmp_path / "b.npz", x[20:30], np.array(["a", "c"])[y[20:30] % 2]))
    both = concat([a, b])
    assert both.classes == ("b", "c", "a") and len(both) == 30
    assert [both.classes[k] for k in both.y[20:]] == [["a", "c"][k % 2] for k in y[20:30]]


# -- splits --------------------------------------------------------------------------------------

def test_split_is_fixed_stratified_and_the_same_for_every_format(tmp_path):
    x, y, _ = digits()
    formats = [read_npz(write_npz(tmp_path / "d.npz", x, y)),
               read_csv(write_csv(tmp_path / "d.csv", x, y)),
               read_idx(write_idx_pair(tmp_path, x.reshape(-1, 8, 8).astype(np.uint8),
                                       y.astype(np.uint8)))]
    (tmp_path / "d.ts").write_text(ts_text(x, y, classes=list(DIGIT_CLASSES)))
    formats.append(read_ts(tmp_path / "d.ts"))
    parts = split(y, seed=0, test_fraction=0.2, val_fraction=0.1)
    for data in formats:
        other = split(data.y, seed=0, test_fraction=0.2, val_fraction=0.1)
        assert all(np.array_equal(parts[k], other[k]) for k in parts)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(y)))
    assert (len(parts["test"]), len(parts["val"])) == (round(0.2 * 1797), round(0.1 * 1797))
    share = np.bincount(y[parts["test"]], minlength=10) / np.bincount(y, minlength=10)
    assert np.abs(share - 0.2).max() < 0.02                       # every class ~20% in test
    # Pinned: a split must never change under the user's results (no library random stream).
    assert parts["test"][:6].tolist() == PINNED_TEST_HEAD
    assert not np.array_equal(split(y, seed=1)["test"], parts["test"])


PINNED_TEST_HEAD = [5, 7, 14, 17, 33, 34]


# -- malformed files and the wrong task ---------------------------------------------------------

def _ts(tmp_path, text, name="digits.ts"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _digits_ts(n=20):
    x, y, _ = digits()
    return ts_text(x[:n], y[:n], classes=list(DIGIT_CLASSES))


def _data_line(text, k):
    """(1-based line number, index) of the k-th case line of a .ts text."""
    lines = text.split("\n")
    i = [j for j, line in enumerate(lines) if line[:1].isdigit()][k]
    return i + 1, lines, i


def test_ts_errors_name_the_line(tmp_path):
    text = _digits_ts()
    n, lines, i = _data_line(text, 3)
    values, label = lines[i].rsplit(":", 1)
    lines[i] = values.rsplit(",", 1)[0] + ":" + label                      # drop one value
    with pytest.raises(SeqFileError, match=rf"digits\.ts line {n}: 63 values, expected 64 "):
        read_ts(_ts(tmp_path, "\n".join(lines)))
    lines[i] = values.replace("0.0", "zero", 1) + ":" + label
    with pytest.raises(SeqFileError, match=rf"digits\.ts line {n}, value \d+: 'zero' is not a number"):
        read_ts(_ts(tmp_path, "\n".join(lines)))
    lines[i] = values + ":11"
    with pytest.raises(SeqFileError, match=rf"line {n}: class label '11' is not among those the header "
                                           r"declares \(@classLabel true 0 1 2"):
        read_ts(_ts(tmp_path, "\n".join(lines)))
    lines[i] = values + ":" + values + ":" + label
    with pytest.raises(SeqFileError, match=rf"line {n}: 2 dimensions, expected 1 \(@univariate true\)"):
        read_ts(_ts(tmp_path, "\n".join(lines)))


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.split("@data")[0], r"digits\.ts: no @data line"),
    (lambda t: t.replace("@data\n", ""), r"digits\.ts line 9: data before the @data line"),
    (lambda t: t.replace("@univariate true", "@univariate yes"),
     r"digits\.ts line 5: @univariate takes true or false, not 'yes'"),
    (lambda t: t.replace("@classLabel true 0 1 2 3 4 5 6 7 8 9", "@classLabel true"),
     r"line 8: @classLabel true must list the class labels"),
    (lambda t: t.replace("@classLabel true 0 1 2 3 4 5 6 7 8 9", "@classLabel false"),
     r"digits\.ts: the header declares no labels"),
    (lambda t: t.replace("@timeStamps false", "@timeStamps true"), r"@timeStamps true is not supported"),
    (lambda t: t.replace("@seriesLength 64", "@seriesLength 60"),
     r"line 10: 64 values, expected 60 \(@seriesLength\)"),
    (lambda t: t.replace("@data\n", "@data\n0.0,1.0\n"), r"line 10: no ':' before the label"),
], ids=["no-data", "data-first", "boolean", "no-classes", "no-labels", "timestamps", "series-length",
        "no-label"])
def test_ts_header_errors(tmp_path, edit, message):
    with pytest.raises(SeqFileError, match=message):
        read_ts(_ts(tmp_path, edit(_digits_ts())))


def test_csv_errors_name_the_line_and_column(tmp_path):
    x, y, _ = digits()
    path = write_csv(tmp_path / "digits.csv", x[:20], y[:20], label="last", header=True)
    lines = path.read_text().split("\n")
    lines[13] = lines[13].rsplit(",", 2)[0] + "," + lines[13].rsplit(",", 1)[1]   # drop a value
    path.write_text("\n".join(lines))
    with pytest.raises(SeqFileError, match=r"digits\.csv line 14: 64 fields, expected 65 \(as in line 1\)"):
        read_csv(path, label_column="label")
    lines = write_csv(path, x[:20], y[:20], label="last", header=True).read_text().split("\n")
    fields = lines[13].split(",")
    fields[3] = "x3"
    lines[13] = ",".join(fields)
    path.write_text("\n".join(lines))
    with pytest.raises(SeqFileError, match=r"digits\.csv line 14, column 4 \('p3'\): 'x3' is not a number"):
        read_csv(path, label_column="label")
    with pytest.raises(SeqFileError, match=r"no column named 'target' in the header \('p0', 'p1'"):
        read_csv(path, label_column="target")
    with pytest.raises(SeqFileError, match=r"label_column 70 is outside the 65 columns"):
        read_csv(path, label_column="70")
    write_csv(path, x[:20], y[:20])
    with pytest.raises(SeqFileError, match=r"64 values per row do not split into channels = 3"):
        read_csv(path, channels=3)


def test_idx_errors_name_the_magic_and_sizes(tmp_path):
    x, y, _ = digits()
    images = write_idx_pair(tmp_path, x[:30].reshape(-1, 8, 8).astype(np.uint8), y[:30].astype(np.uint8))
    labels = tmp_path / "train-labels-idx1-ubyte"
    good_labels = labels.read_bytes()
    labels.write_bytes(idx_bytes(y[:30].astype(np.uint8).reshape(15, 2)))       # magic 2050
    with pytest.raises(SeqFileError, match=r"train-labels-idx1-ubyte: magic 2050 \(0x00000802\) is not "
                                           r"an idx1 label file"):
        read_idx(images)
    labels.write_bytes(good_labels[:-3])
    with pytest.raises(SeqFileError, match=r"train-labels-idx1-ubyte: 27 bytes of data after the header, "
                                           r"expected 30 for 30 ubyte \(magic 2049\); the file is truncated"):
        read_idx(images)
    labels.write_bytes(idx_bytes(y[:29].astype(np.uint8)))
    with pytest.raises(SeqFileError, match=r"holds 29 labels but .*train-images-idx3-ubyte holds 30 images"):
        read_idx(images)
    labels.write_bytes(b"\x00\x00\x07\x01" + good_labels[4:])
    with pytest.raises(SeqFileError, match=r"magic 1793 \(0x00000701\): type byte 0x07 is not an idx type"):
        read_idx(images)
    labels.unlink()
    with pytest.raises(SeqFileError, match=r"train-images-idx3-ubyte: no labels file beside it"):
        read_idx(images)
    with pytest.raises(SeqFileError, match=r"is an idx1 file \(one dimension: labels\), not images"):
        read_idx(_write(tmp_path / "t10k-labels-idx1-ubyte", good_labels))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_npz_errors(tmp_path):
    x, y, _ = digits()
    np.savez(tmp_path / "named.npz", images=x, targets=y)
    with pytest.raises(SeqFileError, match=r"named\.npz has no array named 'x' or 'X' \(the sequences\); "
                                           r"it holds \['images', 'targets'\]"):
        read_npz(tmp_path / "named.npz")
    np.savez(tmp_path / "obj.npz", x=x[:3], y=np.array(["a", 1, None], dtype=object))
    with pytest.raises(SeqFileError, match=r"obj\.npz: array 'y' is an object array"):
        read_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "short.npz", x=x[:5], y=y[:4])
    with pytest.raises(SeqFileError, match=r"short\.npz: array 'y' holds 4 labels for 5 sequences"):
        read_npz(tmp_path / "short.npz")
    np.savez(tmp_path / "flat.npz", x=x[0], y=y[:1])
    with pytest.raises(SeqFileError, match=r"flat\.npz: array 'x' has shape \(64,\); expected \(N, T\)"):
        read_npz(tmp_path / "flat.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SeqFileError, match=r"bad\.npz is not a readable \.npz archive"):
        read(tmp_path / "bad.npz")
    with pytest.raises(SeqFileError, match=r"nothing\.npz does not exist"):
        read(tmp_path / "nothing.npz")


def test_wrong_task_is_explained(tmp_path):
    x, y, intensity = digits()
    names = write_npz(tmp_path / "names.npz", x[:10], np.array(["cat", "dog"])[y[:10] % 2])
    with pytest.raises(SeqFileError, match=r"names\.npz item 0: label 'cat' is not a number; --task "
                                           r"regress needs numeric targets"):
        read(names, "regress")
    targets = write_npz(tmp_path / "targets.npz", x[:10], intensity[:10])
    with pytest.raises(SeqFileError, match=r"targets\.npz item 0: label 4\.\d+ is not a whole number, "
                                           r"so it is no class id; for a numeric target use --task regress"):
        read(targets, "classify")
    cls = _ts(tmp_path, _digits_ts())
    with pytest.raises(SeqFileError, match=r"declares @classLabel \(a classification problem with "
                                           r"classes 0 1 2 3 4 5 6 7 \.\.\.\); use --task classify"):
        read(cls, "regress")
    reg = _ts(tmp_path, ts_text(x[:5], intensity[:5]), "reg.ts")
    with pytest.raises(SeqFileError, match=r"declares @targetLabel true \(a regression problem\); use "
                                           r"--task regress"):
        read(reg, "classify")
    csv = write_csv(tmp_path / "names.csv", x[:10], np.array(["cat", "dog"])[y[:10] % 2])
    with pytest.raises(SeqFileError, match=r"names\.csv line 1: label 'cat' is not a number"):
        read(csv, "regress")


def test_gzip_and_text_errors(tmp_path):
    x, y, _ = digits()
    path = tmp_path / "digits.ts.gz"
    path.write_bytes(gzip.compress(_digits_ts().encode()))
    assert detect_format(path) == "ts" and len(read(path)) == 20
    (tmp_path / "latin.csv").write_bytes(b"1,2,\xe9\n")
    with pytest.raises(SeqFileError, match=r"latin\.csv is not UTF-8 text \(byte 0xe9 at offset 4\)"):
        read(tmp_path / "latin.csv")
