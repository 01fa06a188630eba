"""Reference statistics of a data set: its features (for KID, precision/recall) and their mean and covariance (FID).

They are computed once per (data set, resolution, extractor) and kept in a cache folder as one `.npz` file whose
name hashes those settings and the data set's identity (`ddpm_hub.data.identity`: a fingerprint that changes
whenever the images do), so stale statistics are never used. A training run's data source carries its identity;
`ddpm-hub eval --reference DATA` works it out from DATA (`reference_source`) before anything is sampled. Images are
loaded with `ddpm_hub.data.load_images` (centre crop by default), exactly as for training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import load_images
from ..data.identity import DataIdentity, data_identity, shards_identity
from ..data.shards import ShardSet, is_shard_reference
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


def is_image_folder(path: str | os.PathLike) -> bool:
    """A folder that is not a saved `datasets` data set (those are read by name)."""
    path = Path(path)
    return path.is_dir() and not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _cache_key(**settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def reference_statistics(
    extractor: FeatureExtractor,
    identity: DataIdentity,
    *,
    resolution: int,
    channels: int = 3,
    images: Any = None,
    cache_dir: str | os.PathLike | None = None,
) -> ReferenceStatistics:
    """The reference statistics of the data set `identity` names at `resolution` under `extractor`, from the cache
    when valid.

    Args:
        extractor (`FeatureExtractor`): from `features.get_extractor`.
        identity (`DataIdentity`): what the data set is (a data source's `identity()`, or `reference_source`'s).
        resolution (`int`): the size images are cropped to, the generated images' size.
        channels (`int`, defaults to 3): the images' channels.
        images: the data set's uint8 pixels (N, C, H, W), or a function returning them, called only when the cache
            has no statistics.
        cache_dir (`str`, *optional*): where statistics are kept; defaults to `default_cache_dir()`.
    """
    settings = dict(version=CACHE_VERSION, **identity.settings(), resolution=resolution, channels=channels,
                    extractor=extractor.name)  # fmt: skip
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache_dir / f"{extractor.name}-{resolution}px-{_cache_key(**settings)}.npz"
    cached = _read_cached(cache_file, settings)
    if cached is not None:
        return cached
    if callable(images):
        images = images()
    logger.info(
        "Computing %s reference features of %d images of %s at %dpx (cached in %s).", extractor.name, len(images),
        identity.description, resolution, cache_file,
    )  # fmt: skip
    extracted = extractor.extract(images, progress=f"Reference features ({extractor.name})")
    if len(extracted.features) < 2:
        raise ValueError(
            f"The reference data ({identity.description}) needs at least 2 images, it has {len(extracted.features)}."
        )
    mu, sigma = gaussian_statistics(extracted.features)
    stats = ReferenceStatistics(
        extracted.features, mu, sigma, extractor.name, len(extracted.features), resolution, identity.description,
        identity.fingerprint, extracted.probabilities, cache_file,
    )  # fmt: skip
    _write_cache(stats, settings)
    return stats


def reference_source(
    reference: str,
    *,
    dataset_config_name: str | None = None,
    image_column: str | None = None,
    max_images: int | None = None,
    data_cache_dir: str | None = None,
) -> tuple[DataIdentity, Callable[[int, int], torch.Tensor]]:
    """`ddpm-hub eval --reference`: the identity of `reference` (a folder of images, a built-in set, a `datasets`
    data set or WebDataset shards), worked out and checked now, and a function `images(resolution, channels)` that
    loads its images (centre crops) when the cache has no statistics. `ValueError` in one sentence for a reference
    that does not exist or cannot be read."""
    if is_shard_reference(reference):
        shards = ShardSet.resolve(reference)  # listed once, for the key and (when the cache misses) the reader

        def shard_images(resolution: int, channels: int) -> torch.Tensor:
            # The stream's first N images (in shard order, centre crops): nothing is decoded beyond them.
            reader = open_webdataset(list(shards.paths), image_column=image_column)
            return first_images(reader, max_images or REFERENCE_IMAGES, resolution=resolution, channels=channels)

        return shards_identity(shards, image_column=image_column), shard_images
    folder = Path(reference).exists() and is_image_folder(reference)
    looks_like_a_path = "://" not in reference and (reference.startswith(("/", ".", "~")) or reference.count("/") > 1)
    if looks_like_a_path and not Path(reference).exists():
        raise ValueError(
            f"--reference {reference!r} does not exist; give a folder of images, WebDataset shards, a built-in set or "
            "a data set id."
        )
    names = dict(dataset_name=None if folder else reference, train_data_dir=reference if folder else None)
    identity = data_identity(
        **names, dataset_config_name=dataset_config_name, cache_dir=data_cache_dir, image_column=image_column,
        max_images=max_images, center_crop=True,
    )  # fmt: skip

    def data_images(resolution: int, channels: int) -> torch.Tensor:
        return load_images(
            **names, dataset_config_name=dataset_config_name, image_column=image_column, cache_dir=data_cache_dir,
            resolution=resolution, channels=channels, center_crop=True, max_train_samples=max_images,
        ).pixels  # fmt: skip

    return identity, data_images


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


def _write_cache(stats: ReferenceStatistics, settings: dict) -> None:
    """Write `stats` to its cache file, atomically, with the settings that key it."""
    arrays = dict(features=stats.features, mu=stats.mu, sigma=stats.sigma, settings=np.array(json.dumps(settings)))
    if stats.probabilities is not None:
        arrays["probabilities"] = stats.probabilities
    with atomic_file(stats.cache_file) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
