"""Artifacts appear whole or not at all; manifests record what produced them."""
from __future__ import annotations

import pytest

from edgemm.artifacts import atomic_path, read_manifest, sha256_tree, write_json, write_manifest


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "model.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_file(tmp_path):
    target = write_json(tmp_path / "a.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{broken")
            raise RuntimeError("killed")
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()


def test_manifest_hashes_artifacts_and_tree_hash_tracks_content(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"abc")
    write_manifest(tmp_path, kind="test", inputs={"x": "1"}, config={"c": 2}, metrics={"m": 3}, artifacts=["w.bin"])
    manifest = read_manifest(tmp_path)
    assert manifest["complete"] and manifest["artifacts"]["w.bin"].startswith("ba7816bf")  # sha256("abc")
    before = sha256_tree(tmp_path)
    (tmp_path / "w.bin").write_bytes(b"abd")
    assert sha256_tree(tmp_path) != before


def test_atomic_write_reaches_the_disk_before_it_becomes_visible(tmp_path, monkeypatch):
    """The file's bytes are flushed before the rename, and the rename itself after: true after a crash too."""
    import os

    synced, real_fsync = [], os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_json(tmp_path / "a.json", {"v": 1})
    assert len(synced) == 2
    assert synced[0].startswith(str(tmp_path / ".a.json.")) and synced[0].endswith(".partial")  # before the rename
    assert synced[1] == str(tmp_path)  # the directory entry, after it
