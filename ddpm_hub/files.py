"""Crash-safe output: a file or folder either appears whole under its final name or not at all.

Everything ddpm-hub keeps for the user (pipelines, checkpoints, sample grids, generated images, metadata)
goes through these helpers, so an interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    # The rename itself must reach the disk, not only the file contents.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` only if the block succeeds.

    Args:
        path (`str` or `os.PathLike`): final location of the file.
        overwrite (`bool`, defaults to `True`): when `False`, refuse to replace an existing file
            (raises `FileExistsError`), so that two writers never silently clobber each other.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with contextlib.suppress(OSError):
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # os.link fails if `path` exists: an atomic "create only if absent".
            os.link(tmp, path)
            os.unlink(tmp)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def replace_directory(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move the complete folder `src` to `dst`, replacing any folder there only once `src` is in place.

    Two renames (old out of the way, new in) within one file system; at no moment does `dst` name a partial folder.
    """
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(dst, old)
    os.replace(src, dst)
    _fsync_dir(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def save_image(image, path: str | os.PathLike, **save_kwargs) -> Path:
    """Save a PIL image atomically; the format comes from the suffix of `path`."""
    path = Path(path)
    with atomic_file(path) as tmp:
        image.save(tmp, format=_pil_format(path), **save_kwargs)
    return path


def _pil_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}.get(suffix, suffix.upper() or "PNG")
