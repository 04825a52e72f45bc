"""shelfsight.atomic: the one way files are replaced (temporary file, fsync, rename, fsync folder)."""
from __future__ import annotations

import json
import os

import pytest

from shelfsight import atomic
from shelfsight.bundle import MANIFEST, write_manifest


@pytest.fixture
def fsynced(monkeypatch):
    """Names of the files (and folders) fsynced while the test runs."""
    names: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        names.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)
    monkeypatch.setattr(atomic.os, "fsync", record)
    return names


def test_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path, fsynced):
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic.write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert fsynced == [f".a.json.{os.getpid()}.tmp", tmp_path.name]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def fail(f) -> None:
        f.write(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic.write_with(target, fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_write_via_takes_writers_that_want_a_file_name(tmp_path, fsynced):
    atomic.write_via(tmp_path / "x.txt", lambda tmp: tmp.write_text("by name"))
    assert (tmp_path / "x.txt").read_text() == "by name"
    assert fsynced[0] == f".x.txt.{os.getpid()}.tmp"


def test_replace_symlink_swaps_the_link(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    atomic.replace_symlink(tmp_path / "current", "v1")
    atomic.replace_symlink(tmp_path / "current", "v2")
    assert os.readlink(tmp_path / "current") == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "v1", "v2"]


def test_the_bundle_manifest_is_fsynced_like_every_other_file(tmp_path, fsynced):
    (tmp_path / "model.tflite").write_bytes(b"model")
    (tmp_path / "labels.txt").write_text("a\n")
    write_manifest(tmp_path, {"model": {"file": "model.tflite"}, "labels": {"file": "labels.txt", "count": 1}})
    assert f".{MANIFEST}.{os.getpid()}.tmp" in fsynced
    assert set(json.loads((tmp_path / MANIFEST).read_text())["files"]) == {"model.tflite", "labels.txt"}
