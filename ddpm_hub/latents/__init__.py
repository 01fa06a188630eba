"""Latent diffusion: train the UNet on a frozen VAE's latents, encoded once and cached on disk.

    train_unconditional.py --vae_name_or_path stabilityai/sd-vae-ft-mse --model ldm-churches-8 --resolution 256

`space` is the part a latent run plugs into the Trainer (`LatentSpace`); `vae` reads and checks the autoencoder,
`cache` encodes every image once and keeps the posterior statistics on disk, `source` serves them as a
`DataSource` (`LatentImages`) and reads latent shards' members (`LatentMember`). `shards` stores the same
statistics in WebDataset shards (`ddpm-hub prepare SRC OUT --vae_name_or_path VAE`), which `--train_shards OUT`
streams without encoding again.
"""

from .cache import (
    LatentStats,
    cache_key,
    cached_latents,
    default_cache_root,
    encode_latents,
    pixel_digest,
    stack_moments,
)
from .source import LatentImages, LatentMember, sample_latents
from .space import LatentSpace
from .vae import VAE_CLASSES, VAEInfo, load_vae, read_vae_info, vae_fingerprint, vae_license

__all__ = [
    "VAE_CLASSES",
    "LatentImages",
    "LatentMember",
    "LatentSpace",
    "LatentStats",
    "VAEInfo",
    "cache_key",
    "cached_latents",
    "default_cache_root",
    "encode_latents",
    "load_vae",
    "pixel_digest",
    "read_vae_info",
    "sample_latents",
    "stack_moments",
    "vae_fingerprint",
    "vae_license",
]
