"""What a data set is, as a key: the identity that FID reference statistics are cached under.

Every data source carries one (`DataSource.identity()`), so that training's evaluation, the distiller's scores and
`ddpm-hub eval --reference` compute or find the same statistics for the same images, whatever the images' way in:

- a folder: every image file's relative path, size and modification time;
- a Hub or saved `datasets` data set: its `datasets` fingerprint;
- a built-in set: its files (Twemoji) or its generator's version (shapes);
- WebDataset shards: each shard's name and the manifest's sha256 (`shards.shards_fingerprint`);
- a `datasets` stream without a cheap fingerprint: a hash of the reference images themselves.

Changing, adding or removing an image changes the fingerprint, so stale statistics are never used.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .images import is_image_file, load_source, twemoji_dir
from .shards import ShardSet, shards_fingerprint


@dataclass(frozen=True)
class DataIdentity:
    """A data set's description and fingerprint, and the settings that decide which of its images are references.

    Args:
        description (`str`): for logs, cards and `eval_results.json` ("twemoji (built in)", "12 shards of data").
        fingerprint (`str`): changes whenever the images do (see the module docstring).
        image_column (`str`, *optional*): the column the images were read from.
        max_images (`int`, *optional*): a seeded subset of this size (training's --max_train_samples).
        center_crop (`bool`, defaults to `True`): whether the references are centre crops.
    """

    description: str
    fingerprint: str
    image_column: str | None = None
    max_images: int | None = None
    center_crop: bool = True

    def settings(self) -> dict[str, Any]:
        """The identity as the reference cache keys it (with the resolution, channels and extractor)."""
        return dict(
            source=self.description,
            fingerprint=self.fingerprint,
            image_column=self.image_column,
            max_images=self.max_images,
            center_crop=self.center_crop,
        )


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """A hash of every image file's relative path, size and modification time under `folder`."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def data_fingerprint(
    dataset_name: str | None,
    train_data_dir: str | None,
    dataset_config_name: str | None = None,
    cache_dir: str | None = None,
) -> tuple[str, str]:
    """`(description, fingerprint)` of the data named like training's --dataset_name / --train_data_dir (shards are
    keyed by `shards_fingerprint`)."""
    if train_data_dir is not None:
        if not Path(train_data_dir).is_dir():
            raise ValueError(f"Reference folder {train_data_dir!r} is not a folder.")
        return f"folder {Path(train_data_dir).resolve()}", folder_fingerprint(train_data_dir)
    name = dataset_name or "twemoji"
    if name == "twemoji" and not os.path.exists(name):
        return "twemoji (built in)", folder_fingerprint(twemoji_dir())
    if name == "shapes" and not os.path.exists(name):
        return "shapes (built in)", "draw_shapes-512-seed0-v1"
    dataset, source = load_source(name, dataset_config_name, None, cache_dir)
    return f"{source} {dataset_config_name or ''}".strip(), str(getattr(dataset, "_fingerprint", "")) or source


def data_identity(
    dataset_name: str | None = None,
    train_data_dir: str | None = None,
    dataset_config_name: str | None = None,
    cache_dir: str | None = None,
    *,
    image_column: str | None = None,
    max_images: int | None = None,
    center_crop: bool = True,
) -> DataIdentity:
    """The identity of an image folder, a built-in set or a `datasets` data set (named as training names them)."""
    description, fingerprint = data_fingerprint(dataset_name, train_data_dir, dataset_config_name, cache_dir)
    return DataIdentity(description, fingerprint, image_column, max_images, center_crop)


def shards_identity(shards: str | ShardSet, *, image_column: str | None = None) -> DataIdentity:
    """The identity of WebDataset shards (their references are their first images, centre crops)."""
    description, fingerprint = shards_fingerprint(shards)
    return DataIdentity(description, fingerprint, image_column)


def pixels_identity(description: str, pixels, *, image_column: str | None = None) -> DataIdentity:
    """The identity of images known only by their pixels (uint8 N, C, H, W), e.g. a `datasets` stream's first ones."""
    import numpy as np

    array = np.ascontiguousarray(pixels.numpy())
    digest = hashlib.sha256(f"{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return DataIdentity(description, f"pixels-{digest.hexdigest()}", image_column)
