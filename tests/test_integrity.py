"""Checksum manifests (seqlab/integrity.py)."""

import hashlib
import json

from seqlab.integrity import check_manifest, sha256_file, write_manifest


def folder_with(tmp_path, **files):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_sha256_matches_hashlib(tmp_path):
    f = tmp_path / "a"
    f.write_bytes(b"x" * 3_000_000)   # several read chunks
    assert sha256_file(f) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_an_intact_folder_has_no_problems_and_tmp_files_are_left_out(tmp_path):
    folder_with(tmp_path, a=b"1", b=b"22", **{"c.tmp": b"partial"})
    write_manifest(tmp_path)
    assert sorted(json.loads((tmp_path / "manifest.json").read_text())["files"]) == ["a", "b"]
    assert check_manifest(tmp_path) == []


def test_each_kind_of_damage_is_named(tmp_path):
    folder_with(tmp_path, a=b"1234", b=b"5678", c=b"9")
    write_manifest(tmp_path)
    (tmp_path / "a").write_bytes(b"12")      # truncated
    (tmp_path / "b").write_bytes(b"0000")    # same size, other bytes
    (tmp_path / "c").unlink()
    problems = check_manifest(tmp_path)
    assert len(problems) == 3
    assert "a has 2 bytes, 4 when written" in problems[0]
    assert "b does not match its checksum" in problems[1]
    assert "c is missing" in problems[2]


def test_a_missing_or_garbage_manifest_is_a_problem(tmp_path):
    folder_with(tmp_path, a=b"1")
    assert "manifest.json is missing" in check_manifest(tmp_path)[0]
    (tmp_path / "manifest.json").write_bytes(b"\x80\x04garbage")
    assert "manifest.json is corrupt" in check_manifest(tmp_path)[0]


def test_a_manifest_cannot_point_outside_its_folder(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(
        {"format": 1, "files": {"../x": {"bytes": 1, "sha256": "0"}}}))
    assert "outside its folder" in check_manifest(tmp_path / "m")[0]
