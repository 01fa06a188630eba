"""Encode once: every training image goes through the VAE's encoder one time, and the result is kept on disk.

The cache is one safetensors file per (data, resolution, crop, flips, VAE), in a `ddpm_hub_latents/` folder beside
the decoded images' `datasets` cache. The data, resolution and crop are keyed by a hash of the decoded pixels
themselves (they are what the encoder sees), the VAE by a hash of its config and weights (`vae_fingerprint`). For
an `AutoencoderKL` the posterior's mean and standard deviation are kept, so that training can sample it afresh at
every step (Rombach et al. 2022 train on samples of the posterior); a `VQModel` has one latent per image (its
encoder output before quantisation, which its decoder quantises). With flips, the flipped image is encoded too:
the latent of a flipped image is not the flipped latent.

Stored as float16 (half the disk and memory of float32; the posterior's own std is far above float16's rounding),
with a checksum of the tensors in the file's header: an entry that is unreadable, truncated, changed since it was
written (or written without one), not finite, or of another length is encoded again, with a warning, never trained on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..files import atomic_file
from .vae import vae_fingerprint

logger = logging.getLogger(__name__)

CACHE_FOLDER = "ddpm_hub_latents"
STORAGE_DTYPE = torch.float16
# Images per encoder call: a 256 px batch of 32 through SD's VAE encoder takes ~10 GB of activations in float32.
ENCODE_BATCH_SIZE = 32


@dataclass
class LatentStats:
    """The cached encoder outputs of a data set.

    `mean` is (N, F, C, h, w), F = 2 with flips (index 1: the latent of the left-right flipped image), else 1;
    `std` has the same shape for an `AutoencoderKL`'s posterior and is `None` for a `VQModel`.
    """

    mean: torch.Tensor
    std: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.mean)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.mean, self.std) if t is not None)


def stack_moments(stats: LatentStats) -> torch.Tensor:
    """(N, F, M, C, h, w): the mean (and the std) side by side, so that one indexing operation reads a batch."""
    moments = (stats.mean,) if stats.std is None else (stats.mean, stats.std)
    return torch.stack(moments, 2)


def pixel_digest(pixels) -> str:
    """A hash of the decoded uint8 images (a tensor or a memory-mapped `datasets.Dataset` with a `pixels` column)."""
    digest = hashlib.blake2b(digest_size=16)
    chunk = 1024
    for start in range(0, len(pixels), chunk):
        block = pixels[start : start + chunk]
        block = block if isinstance(block, torch.Tensor) else block["pixels"]
        digest.update(str(tuple(block.shape[1:])).encode())
        digest.update(block.contiguous().numpy().tobytes())
    digest.update(str(len(pixels)).encode())
    return digest.hexdigest()


def cache_key(pixels_hash: str, resolution: int, center_crop: bool, random_flip: bool, vae_hash: str) -> str:
    """The file name of a cache entry: everything the latents depend on."""
    crop = "center" if center_crop else "random"
    flips = "flips" if random_flip else "noflips"
    return f"latents-{resolution}px-{crop}-{flips}-{pixels_hash[:16]}-{vae_hash[:16]}.safetensors"


def default_cache_root(cache_dir: str | None = None) -> Path:
    """`ddpm_hub_latents/` in the folder of the decoded images' cache: --cache_dir, else datasets' own cache."""
    if cache_dir:
        return Path(cache_dir) / CACHE_FOLDER
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE) / CACHE_FOLDER


@torch.no_grad()
def encode_latents(
    vae: torch.nn.Module,
    pixels,
    *,
    random_flip: bool,
    device: torch.device | str = "cpu",
    batch_size: int = ENCODE_BATCH_SIZE,
    dtype: torch.dtype = torch.float32,
    disable_progress: bool = False,
) -> LatentStats:
    """Run the encoder over uint8 (N, C, H, W) images in batches on `device`; see the module docstring."""
    is_kl = type(vae).__name__ == "AutoencoderKL"
    means, stds = [], []
    views = (False, True) if random_flip else (False,)
    for start in tqdm(
        range(0, len(pixels), batch_size), desc="Encoding images with the VAE", unit="batch", disable=disable_progress
    ):
        block = pixels[start : start + batch_size]
        block = block if isinstance(block, torch.Tensor) else block["pixels"]
        images = block.to(device, non_blocking=True).to(dtype).div_(127.5).sub_(1.0)
        mean_views, std_views = [], []
        for flipped in views:
            encoded = vae.encode(images.flip(-1) if flipped else images)
            if is_kl:
                posterior = encoded.latent_dist
                mean_views.append(posterior.mean)
                std_views.append(posterior.std)
            else:
                mean_views.append(encoded.latents)
        means.append(torch.stack(mean_views, 1).to("cpu", STORAGE_DTYPE))
        if is_kl:
            stds.append(torch.stack(std_views, 1).to("cpu", STORAGE_DTYPE))
    return LatentStats(torch.cat(means), torch.cat(stds) if is_kl else None)


def stats_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of a cache entry's tensors (names, shapes, dtypes, bytes), stored in its header and checked on read."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}\0{tuple(tensor.shape)}\0{tensor.dtype}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def save_stats(stats: LatentStats, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"mean": stats.mean.contiguous()}
    if stats.std is not None:
        tensors["std"] = stats.std.contiguous()
    with atomic_file(path) as tmp:  # a crash while writing never leaves a truncated cache entry
        save_file(tensors, str(tmp), metadata={"checksum": stats_checksum(tensors)})


class DamagedCacheError(ValueError):
    """A latent cache entry that is not what was written: unreadable, truncated, changed, or not finite."""


def load_stats(path: Path, num_images: int | None = None) -> LatentStats:
    """A cache entry, verified: readable, its checksum the one written with it, finite, and (with `num_images`) one
    row per image; `DamagedCacheError` saying what is wrong otherwise."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as entry:
            written = (entry.metadata() or {}).get("checksum")
            tensors = {name: entry.get_tensor(name) for name in entry.keys()}
    except Exception as error:  # noqa: BLE001 (safetensors' own error for a truncated or garbled file, or an OSError)
        raise DamagedCacheError(f"unreadable ({type(error).__name__}: {' '.join(str(error).split())[:200]})") from error
    if written is None:
        raise DamagedCacheError("it has no checksum (written by an older ddpm-hub, or not by ddpm-hub)")
    if "mean" not in tensors or stats_checksum(tensors) != written:
        raise DamagedCacheError("its contents differ from the checksum written with them")
    stats = LatentStats(tensors["mean"], tensors.get("std"))
    if not all(torch.isfinite(t).all() for t in (stats.mean, stats.std) if t is not None):
        raise DamagedCacheError("it holds NaN or infinity")
    if num_images is not None and len(stats) != num_images:
        raise DamagedCacheError(f"it has {len(stats)} rows for {num_images} images")
    return stats


def cached_latents(
    pixels,
    vae: torch.nn.Module,
    *,
    cache_root: Path,
    resolution: int,
    center_crop: bool,
    random_flip: bool,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    is_main_process: bool = True,
) -> tuple[LatentStats, Path, bool]:
    """The latents of `pixels`, from the cache when present, else encoded (and saved by the main process).

    `vae` (on the CPU) is moved to `device` only to encode, and back afterwards, so that it holds no accelerator
    memory during training. Returns the statistics, the cache file and whether the encoder ran.
    """
    path = cache_root / cache_key(pixel_digest(pixels), resolution, center_crop, random_flip, vae_fingerprint(vae))
    if path.is_file():
        try:
            stats = load_stats(path, len(pixels))
        except DamagedCacheError as error:
            logger.warning("The cached latents in %s cannot be used: %s. Encoding the images again.", path, error)
        else:
            logger.info("Using the cached latents in %s (checksum verified).", path)
            return stats, path, False
    logger.info("Encoding %d images with the VAE on %s, once (cached in %s).", len(pixels), device, path)
    try:
        vae.to(device)
        stats = encode_latents(
            vae, pixels, random_flip=random_flip, device=device, dtype=dtype, disable_progress=not is_main_process
        )
    finally:
        vae.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if not all(torch.isfinite(t).all() for t in (stats.mean, stats.std) if t is not None):
        raise ValueError(f"The VAE {type(vae).__name__} gave non-finite latents; the cache was not written.")
    if is_main_process:
        save_stats(stats, path)
    return stats, path, True
