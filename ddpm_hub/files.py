"""Crash-safe output: a file or folder either appears whole under its final name or not at all.

Everything ddpm-hub keeps for the user (pipelines, checkpoints, sample grids, generated images, metadata)
goes through these helpers, so an interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
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


class WriteError(RuntimeError):
    """Output that could not be written (full disk, read-only folder, no permission): one line saying what, where, why.

    Attributes:
        errno (`int` or `None`): the operating system's error number, when there was one.
    """

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


# Writers that are not Python's own file objects report the OS error in their message only: safetensors says
# "... No space left on device (os error 28)", torch.save's zip writer "file write failed" or "unexpected pos".
_OS_ERROR_IN_MESSAGE = re.compile(r"\(os error (\d+)\)")
_TORCH_WRITE_FAILURE = ("PytorchStreamWriter failed", "file write failed", "unexpected pos")


# Errors that mean "this folder cannot take these bytes" (not a missing source file, not the network).
_WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
    errno.EFBIG,
    errno.ENAMETOOLONG,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EMLINK,
    errno.EXDEV,
}


def _write_failure(error: BaseException) -> tuple[str, int | None] | None:
    """(reason, errno) if `error` means that bytes could not reach the disk, else `None`."""
    if isinstance(error, OSError):
        if error.errno not in _WRITE_ERRNOS:
            return None
        return f"{error.strerror or os.strerror(error.errno)} (errno {error.errno})", error.errno
    message = " ".join(str(error).split())
    match = _OS_ERROR_IN_MESSAGE.search(message)
    if match:
        number = int(match.group(1))
        return f"{os.strerror(number)} (errno {number})", number
    if isinstance(error, RuntimeError) and any(text in message for text in _TORCH_WRITE_FAILURE):
        return "the file could not be written in full (is the disk full?)", None
    return None


@contextlib.contextmanager
def writing(
    what: str, where: str | os.PathLike, *, staging: str | os.PathLike | None = None, advice: str = ""
) -> Iterator[None]:
    """Turn a failed write in the block into a one-line `WriteError`, removing the partial `staging` folder.

    Args:
        what (`str`): what was being written, for the message ("checkpoint-40", "the pipeline").
        where (`str` or `os.PathLike`): the folder it was written to.
        staging (`str` or `os.PathLike`, *optional*): a temporary folder to delete if the block fails in any way.
        advice (`str`, *optional*): what the user can do next, appended to the message.

    Example: "could not write checkpoint-40 to out: No space left on device (errno 28); earlier checkpoints are
    intact, free space and resume with --resume_from_checkpoint latest".
    """
    try:
        yield
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        failure = None if isinstance(error, WriteError) else _write_failure(error)
        if failure is None:
            raise
        reason, number = failure
        message = f"could not write {what} to {where}: {reason}" + (f"; {advice}" if advice else "")
        raise WriteError(message, number) from error


def check_writable_folder(folder: str | os.PathLike, flag: str) -> None:
    """Refuse, in one sentence (`ValueError`), an output folder that is a file or cannot be written, before any work.

    A file is created and removed in `folder`, or, when it does not exist yet, in the nearest folder above it that
    does (where `mkdir` will create it): a read-only file system or a missing permission shows here, as the first
    write would meet it, whatever `os.access` thinks (root passes permission checks, not a read-only mount).

    Args:
        folder (`str` or `os.PathLike`): the output folder.
        flag (`str`): how the user named it, for the message ("--output_dir", "OUT").
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(folder)!r} exists and is not a folder.")
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag} {str(folder)!r} cannot be created: {probe} is a file, not a folder.")
    test_file = probe / f".ddpm-hub-write-test-{uuid.uuid4().hex[:8]}"
    try:
        with open(test_file, "wb"):
            pass
        os.unlink(test_file)
    except OSError as error:
        reason = f"{error.strerror or error} (errno {error.errno})"
        where = "" if probe == path.absolute() else f" (in {probe})"
        raise ValueError(f"{flag} {str(folder)!r} cannot be written{where}: {reason}.") from error


class NonFiniteWeightsError(RuntimeError):
    """Weights holding NaN or infinity, which are never saved."""


def all_finite(tensors) -> bool:
    """Whether every tensor in `tensors` is free of NaN and infinity: one reduction per device, one host sync."""
    import torch

    flags: dict = {}
    for tensor in tensors:
        if tensor.is_floating_point() or tensor.is_complex():
            flags.setdefault(tensor.device, []).append(torch.isfinite(tensor).all())
    return all(bool(torch.stack(per_device).all()) for per_device in flags.values())
