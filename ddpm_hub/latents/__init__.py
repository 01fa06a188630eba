"""Latent diffusion (issue 16): train the UNet on a frozen VAE's latents, encoded once and cached on disk.

    train_unconditional.py --vae_name_or_path stabilityai/sd-vae-ft-mse --model ldm-churches-8 --resolution 256

`vae` reads and checks the autoencoder, `plan` fits the UNet to its latents, `cache` encodes every image once and
keeps the posterior statistics on disk, `source` serves them to the Trainer as a `DataSource`. `shards` stores
the same statistics in WebDataset shards (`ddpm-hub prepare SRC OUT --vae_name_or_path VAE`), which
`--train_shards OUT` streams (`StreamedLatents`) without encoding again.
"""

from .cache import LatentStats, cache_key, cached_latents, default_cache_root, encode_latents, pixel_digest
from .plan import plan_latent_model
from .source import LatentImages, StreamedLatents, sample_latents
from .vae import VAE_CLASSES, VAEInfo, check_unet_channels, load_vae, read_vae_info, vae_fingerprint, vae_license

__all__ = [
    "VAE_CLASSES",
    "LatentImages",
    "LatentStats",
    "StreamedLatents",
    "VAEInfo",
    "cache_key",
    "cached_latents",
    "check_unet_channels",
    "default_cache_root",
    "encode_latents",
    "load_vae",
    "pixel_digest",
    "plan_latent_model",
    "read_vae_info",
    "sample_latents",
    "vae_fingerprint",
    "vae_license",
]
