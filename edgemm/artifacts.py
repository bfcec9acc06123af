"""Atomic artifact writes, hashing and the run manifest.

Every file is written to a temporary sibling, flushed to disk (fsync), renamed into
place and the rename itself flushed (fsync of the directory), so neither an interrupted
run nor a crash of the machine leaves a file that looks complete. The manifest is
written last; a run directory without ``"complete": true`` is unfinished.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from edgemm.environment import versions
from edgemm.errors import ConfigError, EdgemmError, EdgemmWarning

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a second writer is not refused there
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
LOCK = ".edgemm.lock"
_held: dict[Path, int] = {}  # run directories this process holds (nested writers share the lock)


class RunDirBusy(EdgemmError):
    """Another edgemm command is writing into the same output directory."""


def check_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """``path`` is (or can be made) a folder this process can write into; checked before any long work."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            where = "is" if part == path else f"is under {part}, which is"
            raise ConfigError(f"output {path} {where} a file, not a folder", f"give {option} a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create output folder {path}: {err.strerror}",
                          f"give {option} a folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {path} is not writable", f"give {option} a folder you can write to, "
                          "or change its permissions")
    return path


@contextlib.contextmanager
def run_directory(path: str | Path, option: str = "--out") -> Iterator[Path]:
    """Own ``path`` while writing into it: checked writable first, then locked so that a second command
    writing into the same folder is refused with a clear message instead of racing the first."""
    created = not Path(path).exists()
    path = check_writable_dir(path, option)
    key = path.resolve()
    if key in _held or fcntl is None:
        yield path
        return
    fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunDirBusy(f"{path} is being written by another edgemm command ({owner})",
                             f"wait for it to finish, or give {option} another folder") from None
        except OSError as err:  # NFS without lockd, some FUSE mounts: write unlocked rather than refuse
            warnings.warn(f"cannot lock {path} ({err.strerror}); a second command writing there is not refused",
                          EdgemmWarning, stacklevel=3)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:160]}".encode(), 0)
        _held[key] = fd
        try:
            yield path
        except BaseException:
            if created and [p.name for p in key.iterdir()] == [LOCK]:  # refused before writing: leave no trace
                with contextlib.suppress(OSError):  # never hide the error that got us here
                    (key / LOCK).unlink()
                    key.rmdir()
            raise
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing releases the lock; the file (holding the last writer's pid) stays: removing it would race


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)  # mkstemp creates 0600; artifacts are ordinary files
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, target)
        _fsync(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's bytes, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json(target: str | Path, data: Any) -> Path:
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Hash a file, or every file of a directory (sorted, names included)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.endswith(".partial")):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def write_manifest(run_dir: str | Path, *, kind: str, inputs: dict[str, str], config: dict[str, Any],
                   metrics: dict[str, Any], artifacts: list[str], extra: dict[str, Any] | None = None) -> Path:
    """Write ``manifest.json`` last: what produced this directory and what it holds."""
    run_dir = Path(run_dir)
    manifest = {
        "kind": kind,
        "complete": True,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs,
        "config": config,
        "metrics": metrics,
        "artifacts": {name: sha256_file(run_dir / name) for name in artifacts},
        "versions": versions(),
        **(extra or {}),
    }
    return write_json(run_dir / MANIFEST, manifest)


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())
