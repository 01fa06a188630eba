"""Latent diffusion as a part of a run: the UNet trains on a frozen VAE's latents instead of pixels.

    train_unconditional.py --vae_name_or_path stabilityai/sd-vae-ft-mse --model ldm-churches-8 --resolution 256

`LatentSpace` plugs into the `Trainer` at its hooks (`ddpm_hub.training.parts`): it reads the VAE (config first,
then weights), sizes the UNet for the latents (`--resolution` stays the image size: the UNet's sample size is
`resolution / factor`), opens the latent data (the training images encoded once and cached, or latent shards
streamed without encoding), lends the VAE to previews and evaluations (on the accelerator only meanwhile) and to
every exported pipeline, and records the VAE in the run's settings. Progressive distillation of a latent teacher
uses the same part, built from the teacher folder's `vae/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

import torch

from ..training.parts import DataOpening, ModelShape, PreparedRun, RunPart
from .cache import cached_latents, default_cache_root
from .shards import VAEMismatchError, check_shards_vae, latent_shards_manifest, plan_latent_shards
from .source import LatentImages, LatentMember
from .vae import VAEInfo, load_vae, read_vae_info, vae_license

logger = logging.getLogger("ddpm_hub")


class LatentSpace(RunPart):
    """The part that makes a run latent diffusion; see the module docstring.

    Args:
        shards (`ShardSet`, *optional*): the run's resolved `--train_shards`; latent shards bring their own VAE and
            resolution (their manifest's), and are trained on without encoding.
        vae_label (`str`, *optional*): how the run's settings name the VAE (default: its source); a distillation
            names the teacher's `vae/` as the user named the teacher.
    """

    name = "latent_space"

    def __init__(self, *, shards=None, vae_label: str | None = None):
        self.shards, self.vae_label = shards, vae_label
        self.manifest = latent_shards_manifest(shards)
        self.info: VAEInfo | None = None
        self.vae: torch.nn.Module | None = None  # on the CPU but while sampling
        self.latent_cache = self.cache_dir = None
        self.device = torch.device("cpu")

    # ---- before anything heavy ---------------------------------------------------------------------------------

    def check(self, configs):
        model, data = configs.model, configs.data
        self.cache_dir = data.cache_dir
        if data.is_streamed:  # latent shards: their VAE and resolution, checked before any data is read
            implied = model.vae_name_or_path is None
            model = plan_latent_shards(self.manifest, model, data)
            self.info = self._shards_vae(model, data.cache_dir, implied)
            return dataclasses.replace(configs, model=model)
        self.info = read_vae_info(
            model.vae_name_or_path, model.vae_subfolder, model.latent_scaling_factor, data.cache_dir
        )
        return configs

    def _shards_vae(self, model, cache_dir: str | None, implied: bool) -> VAEInfo:
        """The VAE of latent shards (loaded here, to compare its fingerprint): the one their manifest names, or a
        given `--vae_name_or_path` that must be the same; one line when it is not, or cannot be read."""
        try:
            info = read_vae_info(model.vae_name_or_path, model.vae_subfolder, model.latent_scaling_factor, cache_dir)
            check_shards_vae(
                self.manifest, info, None, implied
            )  # the config first: no weights loaded for a wrong class
            self.vae = load_vae(info, cache_dir)
        except ValueError as error:
            if not implied or isinstance(error, VAEMismatchError):
                raise
            raise ValueError(
                f"the latent shards' VAE {model.vae_name_or_path} (named by their manifest.json) could not be "
                f"read ({error}); pass --vae_name_or_path with a copy of it."
            ) from error
        check_shards_vae(self.manifest, info, self.vae, implied)
        return info

    def shape_model(self, shape: ModelShape) -> ModelShape:
        """The UNet's sample size is the latent grid's (`--resolution` / factor; without it the preset's or the
        UNet config's own size is read as the latent grid), its channels the latents'."""
        info, size = self.info, shape.sample_size
        note = f"the latents of the VAE {info.name} have {info.latent_channels} channels"
        return shape.replace(
            sample_size=info.latent_size(size) if size is not None else None,
            sample_channels=info.latent_channels,
            notes=(*shape.notes, note),
        )

    def image_resolution(self, sample_size: int) -> int:
        return sample_size * self.info.factor

    # ---- data ------------------------------------------------------------------------------------------------

    def open_data(self, opening: DataOpening):
        """Latent shards, streamed; or the images decoded at the image resolution and encoded once (main process
        first: the others read its cache; the Trainer opens data inside `accelerator.main_process_first()`)."""
        info, data, accelerator = self.info, opening.configs.data, opening.accelerator
        self.device = accelerator.device
        channels = info.config.get("in_channels", 3)
        if self.manifest is not None:
            record = self.manifest["latents"]
            self.latent_cache = f"the latents in {data.train_shards[0]}"
            if data.random_flip and "flipped" not in record["views"]:
                raise ValueError("--random_flip needs the flipped images' latents, which these shards do not hold.")
            member = LatentMember(info, tuple(record["latent_shape"]), record["member"])
            source = opening.open_default(channels=channels, member=member)
            logger.info("Latent diffusion on latent shards: %s (no encoding).", source.description)
            return source
        pixels = opening.open_default(channels=channels)
        self.vae = load_vae(info, data.cache_dir) if self.vae is None else self.vae
        stats, self.latent_cache, _ = cached_latents(
            pixels.images.pixels,
            self.vae,
            cache_root=default_cache_root(data.cache_dir),
            resolution=opening.image_resolution,
            center_crop=data.center_crop,
            random_flip=data.random_flip,
            device=accelerator.device,
            is_main_process=accelerator.is_main_process,
        )
        source = LatentImages(pixels, stats, info, data.random_flip)
        logger.info(
            "Latent diffusion: %d px images are %s latents of the %s %s (scaled by %g); the UNet trains on those.",
            opening.image_resolution, "x".join(map(str, source.sample_shape)), info.class_name, info.name,
            info.scaling_factor,
        )  # fmt: skip
        return source

    def prepare(self, run: PreparedRun) -> None:
        self.device = run.accelerator.device
        self.sample_shape = run.data.sample_shape

    # ---- sampling and export ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def sampling(self):
        """The VAE on the accelerator for a preview or an evaluation, then back on the CPU (and its memory freed)."""
        self.vae.to(self.device)
        try:
            yield
        finally:
            self.vae.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def pipeline_parts(self, parts):
        """Every pipeline of the run decodes: the VAE and the run's latent scaling factor."""
        return parts.replace(vae=self.vae, latent_scaling_factor=self.info.scaling_factor)

    def hyperparameters(self) -> dict[str, Any]:
        info = self.info
        return {
            "latent_shape": "x".join(str(n) for n in self.sample_shape),
            "latent_scaling_factor_effective": info.scaling_factor,
            "vae": self.vae_label or info.name,
            "vae_class": info.class_name,
            "vae_license": vae_license(info, self.cache_dir) or "",
            "latent_cache": str(self.latent_cache),
        }
