"""The autoencoder of a latent run: which one, what its latents look like, and whether a UNet fits them.

Everything here reads only the VAE's `config.json` (cheap: it runs before any data or weights are touched), except
`load_vae` and `vae_fingerprint`, which load and hash the weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# The autoencoders a latent run accepts (diffusers class names): Stable Diffusion's KL VAE and the LDM VQ-GAN.
VAE_CLASSES = ("AutoencoderKL", "VQModel")


@dataclass
class VAEInfo:
    """What a run needs to know about its autoencoder, from its config alone.

    Args:
        source (`str`): `--vae_name_or_path` (a folder or a Hub id).
        subfolder (`str`, *optional*): `--vae_subfolder` (e.g. `vae` inside a Stable Diffusion repo).
        class_name (`str`): `AutoencoderKL` or `VQModel`.
        config (`dict`): the VAE's config.
        scaling_factor (`float`): the factor latents are multiplied by before the UNet sees them.
    """

    source: str
    subfolder: str | None
    class_name: str
    config: dict[str, Any]
    scaling_factor: float

    @property
    def factor(self) -> int:
        """Downsampling factor of the encoder: each block after the first halves the image."""
        return 2 ** (len(self.config["block_out_channels"]) - 1)

    @property
    def latent_channels(self) -> int:
        # A VQModel's latents (before quantisation) have the codebook's width, which may differ from latent_channels.
        if self.class_name == "VQModel":
            return self.config.get("vq_embed_dim") or self.config["latent_channels"]
        return self.config["latent_channels"]

    @property
    def is_kl(self) -> bool:
        """Whether the encoder gives a Gaussian posterior (mean and std) rather than one deterministic latent."""
        return self.class_name == "AutoencoderKL"

    @property
    def name(self) -> str:
        return f"{self.source}/{self.subfolder}" if self.subfolder else self.source

    def latent_size(self, resolution: int) -> int:
        """The side of the latent grid for `resolution` px images; `ValueError` if it does not divide."""
        if resolution % self.factor:
            raise ValueError(
                f"--resolution {resolution} is not divisible by {self.factor}, the downsampling factor of the VAE "
                f"{self.name}; use a multiple of {self.factor} "
                f"(e.g. {max(1, round(resolution / self.factor)) * self.factor})."
            )
        return resolution // self.factor

    def sample_shape(self, resolution: int) -> tuple[int, int, int]:
        size = self.latent_size(resolution)
        return (self.latent_channels, size, size)


def _subfolder_hint(source: str) -> str:
    path = Path(source)
    if path.is_dir() and (path / "vae" / "config.json").is_file():
        return "; it holds a vae/ folder: add --vae_subfolder vae"
    return "; for a Stable Diffusion repo add --vae_subfolder vae"


def read_vae_info(
    source: str, subfolder: str | None = None, scaling_factor: float | None = None, cache_dir: str | None = None
) -> VAEInfo:
    """Read and check the VAE's config; a `ValueError` of one sentence when it is not an accepted autoencoder."""
    from diffusers import AutoencoderKL

    try:
        config = dict(AutoencoderKL.load_config(source, subfolder=subfolder, cache_dir=cache_dir))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--vae_name_or_path {source!r} has no autoencoder config{_subfolder_hint(source)} ({error})"
        ) from error
    class_name = config.get("_class_name")
    if class_name not in VAE_CLASSES:
        raise ValueError(
            f"--vae_name_or_path {source!r} is not an autoencoder: its config is for "
            f"{class_name or 'an unnamed model'}, "
            f"not one of {', '.join(VAE_CLASSES)}{_subfolder_hint(source)}."
        )
    if scaling_factor is not None and not scaling_factor > 0:
        raise ValueError(f"--latent_scaling_factor must be positive, got {scaling_factor}.")
    factor = scaling_factor if scaling_factor is not None else float(config.get("scaling_factor") or 1.0)
    return VAEInfo(source, subfolder, class_name, config, factor)


def load_vae(info: VAEInfo, cache_dir: str | None = None) -> torch.nn.Module:
    """The frozen autoencoder (`AutoencoderKL` or `VQModel`) in eval mode, on the CPU."""
    import diffusers

    vae_class = getattr(diffusers, info.class_name)
    try:
        vae = vae_class.from_pretrained(info.source, subfolder=info.subfolder, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        raise ValueError(f"--vae_name_or_path {info.name!r}: its weights could not be loaded ({error}).") from error
    return vae.requires_grad_(False).eval()


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """A hash of the VAE's class, config and weights: the VAE's part of the latent cache's key."""
    digest = hashlib.blake2b(digest_size=16)
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    digest.update(f"{type(vae).__name__}:{json.dumps(config, sort_keys=True, default=str)}".encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def vae_license(info: VAEInfo, cache_dir: str | None = None) -> str | None:
    """The licence in the VAE's model card metadata (its folder's README.md, or the Hub repo's), if it has one."""
    from huggingface_hub import ModelCard

    candidates = []
    path = Path(info.source)
    if path.is_dir():
        if info.subfolder:
            candidates.append(path / info.subfolder / "README.md")
        candidates.append(path / "README.md")
        for candidate in candidates:
            if candidate.is_file():
                return ModelCard.load(candidate).data.to_dict().get("license")
        return None
    try:
        return ModelCard.load(info.source).data.to_dict().get("license")
    except (
        OSError,
        ValueError,
    ):  # offline without a cached card, or a repo without one: the card says "see the VAE's page"
        return None
