"""Reference statistics of a data set: its features (for KID, precision/recall) and their mean and covariance (FID).

They are computed once per (data set, resolution, extractor) and kept in a cache folder as one `.npz` file whose
name hashes those settings and a fingerprint of the data: the list of files with their sizes and modification
times for a folder, the `datasets` fingerprint for a Hub or saved data set, the generator's version for a built-in
synthetic set. Changing, adding or removing an image changes the fingerprint, so stale statistics are never used.
Images are loaded with `ddpm_hub.data.load_images` (centre crop by default), exactly as for training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import is_image_file, load_images, load_source, twemoji_dir
from ..data.shards import ShardSet, is_shard_reference, shards_fingerprint
from ..data.stream import REFERENCE_IMAGES, first_images, open_webdataset
from ..files import atomic_file
from .features import FeatureExtractor
from .metrics import gaussian_statistics

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the way features are computed changes


def default_cache_dir() -> Path:
    """`$DDPM_HUB_CACHE`, else `$XDG_CACHE_HOME/ddpm_hub` (~/.cache/ddpm_hub), then `reference_stats/`."""
    root = os.environ.get("DDPM_HUB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "ddpm_hub"
    )
    return Path(root) / "reference_stats"


@dataclass
class ReferenceStatistics:
    """Features of a data set under one extractor, with the Gaussian fit that FID needs."""

    features: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    extractor: str
    num_images: int
    resolution: int
    source: str
    fingerprint: str
    probabilities: np.ndarray | None = None
    cache_file: Path | None = None
    from_cache: bool = False


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """A hash of every image file's relative path, size and modification time under `folder`."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def is_image_folder(path: str | os.PathLike) -> bool:
    """A folder that is not a saved `datasets` data set (those are read by name)."""
    path = Path(path)
    return path.is_dir() and not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def data_fingerprint(dataset_name: str | None, train_data_dir: str | None, dataset_config_name: str | None = None,
                     cache_dir: str | None = None) -> tuple[str, str]:  # fmt: skip
    """(description, fingerprint) of the data named like training's --dataset_name / --train_data_dir (shards are
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


def _cache_key(**settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def reference_statistics(
    extractor: FeatureExtractor,
    *,
    resolution: int,
    dataset_name: str | None = None,
    train_data_dir: str | None = None,
    dataset_config_name: str | None = None,
    image_column: str | None = None,
    max_images: int | None = None,
    channels: int = 3,
    center_crop: bool = True,
    cache_dir: str | os.PathLike | None = None,
    data_cache_dir: str | None = None,
    images=None,
    key: tuple[str, str] | None = None,
) -> ReferenceStatistics:
    """The reference statistics of a data set at `resolution` under `extractor`, from the cache when valid.

    Args:
        extractor (`FeatureExtractor`): from `features.get_extractor`.
        resolution (`int`): the size images are cropped to, the generated images' size.
        dataset_name, train_data_dir, dataset_config_name, image_column: as for training.
        max_images (`int`, *optional*): use a seeded random subset of this size (as --max_train_samples).
        cache_dir (`str`, *optional*): where statistics are kept; defaults to `default_cache_dir()`.
        data_cache_dir (`str`, *optional*): the `datasets` cache (training's --cache_dir).
        images (*optional*): the data set's uint8 pixels (N, C, H, W) when the caller has loaded them already
            (training does); they must be what `load_images` returns for these arguments. Or a function returning
            them, called only when the cache has no statistics.
        key (`tuple[str, str]`, *optional*): `(description, fingerprint)` of the data when the caller knows it (a
            training stream); by default it comes from the data arguments.
    """
    # Shards are listed once, for their key and (when the cache misses) their reader.
    shards = ShardSet.resolve(dataset_name) if dataset_name is not None and is_shard_reference(dataset_name) else None
    if key is not None:
        source, fingerprint = key
    elif shards is not None:  # streamed shards: their manifest's sha256s
        source, fingerprint = shards_fingerprint(shards)
    else:
        source, fingerprint = data_fingerprint(dataset_name, train_data_dir, dataset_config_name, data_cache_dir)
    settings = dict(
        version=CACHE_VERSION, source=source, fingerprint=fingerprint, resolution=resolution, channels=channels,
        extractor=extractor.name, image_column=image_column, max_images=max_images, center_crop=center_crop,
    )  # fmt: skip
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache_dir / f"{extractor.name}-{resolution}px-{_cache_key(**settings)}.npz"
    cached = _read_cached(cache_file, settings)
    if cached is not None:
        return cached

    if callable(images):
        images = images()
    if images is None:
        images = reference_images(
            dataset_name, train_data_dir, dataset_config_name, image_column, max_images, resolution, channels,
            center_crop, data_cache_dir, shards,
        )  # fmt: skip
    logger.info(
        "Computing %s reference features of %d images of %s at %dpx.", extractor.name, len(images), source, resolution
    )
    extracted = extractor.extract(images)
    if len(extracted.features) < 2:
        raise ValueError(f"The reference data ({source}) needs at least 2 images, it has {len(extracted.features)}.")
    mu, sigma = gaussian_statistics(extracted.features)
    stats = ReferenceStatistics(
        extracted.features, mu, sigma, extractor.name, len(extracted.features), resolution, source, fingerprint,
        extracted.probabilities, cache_file,
    )  # fmt: skip
    _write_cache(stats, settings)
    return stats


def _read_cached(cache_file: Path, settings: dict) -> ReferenceStatistics | None:
    """The statistics in `cache_file` if it holds them for exactly these `settings`; `None` otherwise (an unreadable
    file is logged and computed again)."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as stored:
            if json.loads(str(stored["settings"])) != settings:
                return None
            probabilities = stored["probabilities"] if "probabilities" in stored.files else None
            return ReferenceStatistics(
                stored["features"], stored["mu"], stored["sigma"], settings["extractor"], len(stored["features"]),
                settings["resolution"], settings["source"], settings["fingerprint"], probabilities, cache_file,
                from_cache=True,
            )  # fmt: skip
    except (OSError, ValueError, KeyError) as error:
        logger.warning("Ignoring unreadable reference cache %s: %s", cache_file, error)
        return None


def reference_images(dataset_name, train_data_dir, dataset_config_name, image_column, max_images, resolution,
                     channels, center_crop, data_cache_dir, shards: ShardSet | None) -> torch.Tensor:  # fmt: skip
    """uint8 (N, C, H, W): the reference images named like training's data flags, or the first images of `shards`."""
    if shards is not None:
        # A stream's first N images (in shard order, centre crops): nothing is decoded beyond them.
        reader = open_webdataset(list(shards.paths), image_column=image_column)
        count = max_images or REFERENCE_IMAGES  # a streamed --reference: its first 10k images
        return first_images(reader, count, resolution=resolution, channels=channels)
    return load_images(
        dataset_name, dataset_config_name=dataset_config_name, train_data_dir=train_data_dir,
        image_column=image_column, cache_dir=data_cache_dir, resolution=resolution, channels=channels,
        center_crop=center_crop, max_train_samples=max_images,
    ).pixels  # fmt: skip


def _write_cache(stats: ReferenceStatistics, settings: dict) -> None:
    """Write `stats` to its cache file, atomically, with the settings that key it."""
    arrays = dict(features=stats.features, mu=stats.mu, sigma=stats.sigma, settings=np.array(json.dumps(settings)))
    if stats.probabilities is not None:
        arrays["probabilities"] = stats.probabilities
    with atomic_file(stats.cache_file) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def stream_reference_statistics(
    extractor: FeatureExtractor,
    stream,
    *,
    resolution: int,
    image_column: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ReferenceStatistics:
    """The reference statistics of a training stream (`StreamedImages`): its first `REFERENCE_IMAGES` images
    (centre crops, in shard order, read by `stream.reference_images`, never the whole set).

    Shards are keyed as `ddpm-hub eval --reference SHARDS` keys them (the two share a cache) and their images are read
    only when the cache misses; a `datasets` stream has no cheap fingerprint, so its images are read and keyed by
    their own pixels. Either way another shard set, resolution or number of channels is another cache file.
    """
    key, images = stream.reference_key(), stream.reference_images  # read only when the cache misses
    if key is None:
        images = stream.reference_images()
        array = np.ascontiguousarray(images.numpy())
        digest = hashlib.sha256(f"{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
        key = (stream.description, f"pixels-{digest.hexdigest()}")
    return reference_statistics(
        extractor,
        resolution=resolution,
        channels=stream.channels,
        image_column=image_column,
        cache_dir=cache_dir,
        images=images,
        key=key,
    )
