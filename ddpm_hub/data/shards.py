"""Where WebDataset shards are: `--train_shards` patterns resolved to a list of tar files, and their manifest.

A pattern is a brace range (`data/train-{000000..000099}.tar`, as webdataset writes them), a glob, a folder (its
`*.tar` files), several of those, or any fsspec URL (`hf://datasets/org/name/train-{000000..000009}.tar`,
`s3://bucket/shards/`). Local shards are all checked before training; for a URL the first shard (and the
manifest, when there is one) are, so a typo or an unreachable host is one clear line, not a worker traceback.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "ddpm-hub-shards/1"
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICE = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """`a-{000..002}.tar` -> `a-000.tar a-001.tar a-002.tar` (zero padding kept); `{x,y}` -> both."""
    match = _RANGE.search(pattern)
    if match:
        first, last = match.group(1), match.group(2)
        width = len(first) if first.startswith("0") else 0
        numbers = range(int(first), int(last) + 1)
        return [
            name
            for n in numbers
            for name in expand_braces(pattern[: match.start()] + str(n).zfill(width) + pattern[match.end() :])
        ]
    match = _CHOICE.search(pattern)
    if match:
        return [
            name
            for choice in match.group(1).split(",")
            for name in expand_braces(pattern[: match.start()] + choice + pattern[match.end() :])
        ]
    return [pattern]


def _filesystem(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)


def _resolve_one(pattern: str) -> list[str]:
    is_url = "://" in pattern
    names = expand_braces(pattern)
    if len(names) > 1 or (pattern.endswith(".tar") and not any(char in pattern for char in "*?[")):
        if not is_url:
            missing = [name for name in names if not _is_file(name)]
            if missing:
                raise ValueError(
                    f"--train_shards: shard {missing[0]} does not exist ({len(missing)} of {len(names)} missing)."
                )
        return names
    fs, path = _filesystem(pattern)
    if any(char in path for char in "*?["):
        found = sorted(fs.glob(path))
    elif fs.isdir(path):
        found = sorted(name for name in fs.ls(path, detail=False) if str(name).endswith(".tar"))
    else:
        raise ValueError(
            f"--train_shards {pattern!r} is not a .tar file, a folder, a glob or a brace pattern that exists."
        )
    if not found:
        raise ValueError(f"--train_shards {pattern!r} matches no .tar shard.")
    return [fs.unstrip_protocol(name) if is_url else str(name) for name in found]


def _is_file(path: str) -> bool:
    return os.path.isfile(path)


def resolve_shards(patterns: str | Sequence[str]) -> list[str]:
    """The shard paths or URLs named by `patterns`, in order; raises `ValueError` with one sentence if any is missing,
    a pattern matches nothing, or a remote location cannot be reached."""
    if isinstance(patterns, str):
        patterns = [patterns]
    shards: list[str] = []
    try:
        for pattern in patterns:
            shards.extend(_resolve_one(str(pattern)))
        remote = [shard for shard in shards if "://" in shard]
        if remote:
            fs, path = _filesystem(remote[0])
            try:
                fs.info(path)  # raises the backend's own error (offline, refused, 401); `exists` would hide it
            except FileNotFoundError as error:
                raise ValueError(f"--train_shards: shard {remote[0]} does not exist.") from error
    except ValueError:
        raise
    except Exception as error:  # fsspec raises its backends' own errors: offline, refused, 401, unknown protocol
        message = " ".join(str(error).split())[:300]
        raise ValueError(
            f"--train_shards {' '.join(patterns)!r} could not be read: {type(error).__name__}: {message}"
        ) from error
    if not shards:
        raise ValueError("--train_shards names no shard.")
    return shards


def shard_folder(shard: str) -> str:
    return shard.rsplit("/", 1)[0] if "/" in shard else "."


def shard_name(shard: str) -> str:
    return shard.rsplit("/", 1)[-1]


def read_manifest(shards: Sequence[str], whole_folder: bool = False) -> dict[str, Any] | None:
    """The `manifest.json` written by `ddpm-hub prepare` beside the first shard, checked against the shards; `None`
    without one (or for shards of several folders, which no one manifest describes).

    The shards must match it, cheaply (its per-shard counts give the length of an epoch): every shard is one it
    lists, each local shard has the size it records, and with `whole_folder` (the shards are all of the folder's
    `.tar` files) none that it lists is missing. A mismatch is a `ValueError` saying what differs.
    """
    import fsspec

    folder = shard_folder(shards[0])
    url = f"{folder}/{MANIFEST_NAME}"
    try:
        with fsspec.open(url, "r") as handle:
            manifest = json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError, IsADirectoryError):
        return None
    except Exception:  # noqa: BLE001 (an unreachable manifest only costs the epoch length; the shards were checked already)
        return None
    if any(shard_folder(shard) != folder for shard in shards):
        return None
    entries = {entry["name"]: entry for entry in manifest.get("shards", [])}
    differs = f"the shards in {folder} do not match its {MANIFEST_NAME} (written by `ddpm-hub prepare`)"
    rewrite = "run the `ddpm-hub prepare` command that wrote them again (it rewrites damaged and missing shards)"
    unlisted = [shard_name(shard) for shard in shards if shard_name(shard) not in entries]
    if unlisted:
        raise ValueError(
            f"{differs}: {unlisted[0]} is not one of the {len(entries)} shards it lists ({len(unlisted)} such); move "
            f"{'it' if len(unlisted) == 1 else 'them'} out of {folder}, or write the shard set again."
        )
    if whole_folder:
        present = {shard_name(shard) for shard in shards}
        missing = [name for name in entries if name not in present]
        if missing:
            raise ValueError(
                f"{differs}: {missing[0]} is missing ({len(missing)} of the {len(entries)} shards it lists); restore "
                f"it, {rewrite}, or name the shards to train on with a brace pattern."
            )
    for shard in shards:
        recorded = entries[shard_name(shard)].get("size")
        if recorded is not None and "://" not in shard and os.path.getsize(shard) != recorded:
            raise ValueError(
                f"{differs}: {shard_name(shard)} is {os.path.getsize(shard):,} bytes, the manifest says {recorded:,} "
                f"(changed or truncated since); {rewrite}."
            )
    return manifest


def verify_shards(shard_set: ShardSet) -> None:
    """Compare every local shard's sha256 with its manifest's (reads every shard once); `ValueError` naming the first
    that differs. Shards without a manifest, or remote ones, are not checked."""
    if shard_set.manifest is None:
        return
    digests = {entry["name"]: entry.get("sha256") for entry in shard_set.manifest["shards"]}
    for shard in shard_set.paths:
        expected = digests.get(shard_name(shard))
        if expected is not None and "://" not in shard and file_sha256(shard) != expected:
            raise ValueError(
                f"the shards in {shard_folder(shard)} do not match its {MANIFEST_NAME}: the sha256 of "
                f"{shard_name(shard)} differs from the one recorded (changed since `ddpm-hub prepare` wrote it); run "
                "that command again (it rewrites damaged shards)."
            )


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardSet:
    """`--train_shards` resolved once: the shards in order and their manifest (`None` without a complete one).

    A run resolves its patterns into one `ShardSet` at start-up and hands it on (to the stream, the latent checks and
    the FID reference key), so that remote shards are listed and their manifest fetched once, not once per reader.
    """

    paths: tuple[str, ...]
    manifest: dict[str, Any] | None

    @classmethod
    def resolve(cls, patterns: str | Sequence[str] | ShardSet) -> ShardSet:
        """The shards named by `patterns` and their manifest; `ValueError` in one sentence as `resolve_shards`."""
        if isinstance(patterns, ShardSet):
            return patterns
        shards = resolve_shards(patterns)
        names = [patterns] if isinstance(patterns, str) else patterns
        whole_folder = any("://" not in str(name) and os.path.isdir(name) for name in names)  # all its .tar files
        return cls(tuple(shards), read_manifest(shards, whole_folder))


def resolve_train_shards(train_shards: str | Sequence[str] | None) -> ShardSet | None:
    """A run's `--train_shards` resolved, or `None`: none given, or they cannot be resolved (the run says why in one
    line when it opens its stream)."""
    if not train_shards:
        return None
    try:
        return ShardSet.resolve(train_shards)
    except ValueError:
        return None


def shard_counts(shards: Sequence[str], manifest: dict[str, Any] | None) -> list[int] | None:
    """Images in each of `shards` by the manifest, or `None` without one."""
    if manifest is None:
        return None
    counts = {entry["name"]: int(entry["num_images"]) for entry in manifest["shards"]}
    return [counts[shard_name(shard)] for shard in shards]


def is_shard_reference(value: str) -> bool:
    """Whether `value` (an `--reference` or data argument) names WebDataset shards rather than images or a data set."""
    text = str(value)
    if text.endswith(".tar") or (".tar" in text and any(char in text for char in "{*?")):
        return True
    return os.path.isdir(text) and os.path.isfile(os.path.join(text, MANIFEST_NAME))


def shards_fingerprint(value: str | Sequence[str] | ShardSet) -> tuple[str, str]:
    """`(description, fingerprint)` of shards, for a reference cache: of exactly these shards in this order, each by
    its name and the manifest's sha256, else (no manifest) its size and modification time (a URL: its name only)."""
    import hashlib

    shard_set = ShardSet.resolve(value)
    shards, manifest = shard_set.paths, shard_set.manifest
    digests = {entry["name"]: entry.get("sha256") for entry in manifest["shards"]} if manifest is not None else {}
    parts = []
    for shard in shards:
        part = digests.get(shard_name(shard))
        if part is None and "://" not in shard:
            stat = os.stat(shard)
            part = f"{stat.st_size}\0{stat.st_mtime_ns}"
        parts.append(f"{shard_name(shard)}\0{part or ''}")
    return f"{len(shards)} shards of {shard_folder(shards[0])}", hashlib.sha256("\n".join(parts).encode()).hexdigest()
