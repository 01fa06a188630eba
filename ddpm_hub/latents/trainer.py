"""`LatentTrainer`: the `Trainer` on cached VAE latents (`train_unconditional.py --vae_name_or_path ...`).

It changes only what a latent run does differently: the plan (the UNet's sample size and channels follow the VAE,
checked before anything heavy), the data (`LatentImages`, encoded once and cached), and every place that turns
latents into pixels (previews, evaluation, the exported pipeline with its `vae/`, the model card). The VAE stays on
the CPU during training and visits the accelerator only to encode, and to decode previews and evaluation samples.

On latent shards (`--train_shards` written by `ddpm-hub prepare --vae_name_or_path`) nothing is encoded: the VAE
and the image resolution come from the shards' manifest (`--vae_name_or_path`, if given, must be the same VAE),
and the data are `StreamedLatents`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from ..assembly import PipelineParts
from ..data.stream import open_stream
from ..evaluation.during_training import Evaluator
from ..export import ema_weights, export_pipeline
from ..training import Trainer, plan_model, reported_as_setup_errors
from ..training.plan import ModelPlan
from ..training.sources import InMemoryImages
from .cache import cached_latents, default_cache_root
from .plan import plan_latent_model
from .shards import check_shards_vae, latent_shards_manifest, plan_latent_shards
from .source import LatentImages, StreamedLatents
from .vae import VAEInfo, load_vae, read_vae_info, vae_license

logger = logging.getLogger("ddpm_hub")


class LatentEvaluator(Evaluator):
    """FID & co. of decoded samples against the training images' pixels (at the image resolution, not the latent's)."""

    def __init__(self, run, output_dir: Path, trainer: LatentTrainer):
        super().__init__(run, output_dir)
        self.trainer = trainer

    def prepare(self, source, data, resolution: int, device) -> None:
        super().prepare(source, data, self.trainer.image_resolution, device)

    def evaluate(self, unet, noise_scheduler, global_step: int):
        with self.trainer.vae_on_device() as vae:
            return super().evaluate(
                unet, noise_scheduler, global_step, vae=vae, latent_scaling_factor=self.trainer.vae_info.scaling_factor
            )


class LatentTrainer(Trainer):
    """A `Trainer` whose data are a VAE's latents; see the module docstring. Built by `train` for --vae_name_or_path."""

    def check(self, cleanup: contextlib.ExitStack) -> None:
        model_config, data_config = self.configs.model, self.configs.data
        self.shards_manifest, self.vae = None, None
        with reported_as_setup_errors():
            if data_config.is_streamed:  # latent shards: their VAE and resolution (before anything heavy)
                self.shards_manifest = latent_shards_manifest(self.shards)
                implied = model_config.vae_name_or_path is None
                model_config = plan_latent_shards(self.shards_manifest, model_config, data_config)
                self.configs = dataclasses.replace(self.configs, model=model_config)
                self.vae_info = self.shards_vae(model_config, implied)
            else:
                self.vae_info = read_vae_info(
                    model_config.vae_name_or_path,
                    model_config.vae_subfolder,
                    model_config.latent_scaling_factor,
                    data_config.cache_dir,
                )
        super().check(cleanup)
        self.evaluator = LatentEvaluator(self.run_config, self.output_dir, self)

    def make_plan(self, model_config) -> ModelPlan:
        """The UNet sized for the latents (`plan.resolution` is the latent grid's side); sets `image_resolution`."""
        plan, self.image_resolution = plan_latent_model(
            model_config, self.vae_info, plan_model, self.configs.data.cache_dir
        )
        return plan

    def shards_vae(self, model_config, implied: bool) -> VAEInfo:
        """The VAE of latent shards (loaded here, to compare its fingerprint): the one their manifest names, or a
        given `--vae_name_or_path` that must be the same; one line when it is not, or cannot be read."""
        cache_dir = self.configs.data.cache_dir
        try:
            info = read_vae_info(
                model_config.vae_name_or_path, model_config.vae_subfolder, model_config.latent_scaling_factor, cache_dir
            )
            check_shards_vae(self.shards_manifest, info, None)  # the config first: no weights loaded for a wrong class
            self.vae = load_vae(info, cache_dir)
        except ValueError as error:
            if not implied:
                raise
            raise ValueError(
                f"the latent shards' VAE {model_config.vae_name_or_path} (named by their manifest.json) could not be "
                f"read ({error}); pass --vae_name_or_path with a copy of it."
            ) from error
        check_shards_vae(self.shards_manifest, info, self.vae)
        return info

    def load_data(self) -> LatentImages | StreamedLatents:
        """Decode the images at the image resolution, then encode them once (main process first: the others read
        its cache; `setup` calls this inside `accelerator.main_process_first()`); or stream latent shards."""
        data, info, accelerator = self.configs.data, self.vae_info, self.accelerator
        channels = info.config.get("in_channels", 3)
        if self.shards_manifest is not None:
            record = self.shards_manifest["latents"]
            self.latent_cache = f"the latents in {data.train_shards[0]}"
            if data.random_flip and "flipped" not in record["views"]:
                raise ValueError("--random_flip needs the flipped images' latents, which these shards do not hold.")
            source = open_stream(
                data,
                self.image_resolution,
                channels,
                accelerator,
                self.shards,
                latents_column=record["member"],
                source_class=StreamedLatents,
                vae=info,
                latent_shape=tuple(record["latent_shape"]),
            )
            logger.info("Latent diffusion on latent shards: %s (no encoding).", source.description)
            return source
        images = InMemoryImages.load(data, resolution=self.image_resolution, channels=channels, seed=self.data_seed())
        self.vae = load_vae(info, data.cache_dir) if self.vae is None else self.vae
        stats, self.latent_cache, _ = cached_latents(
            images.images.pixels,
            self.vae,
            cache_root=default_cache_root(data.cache_dir),
            resolution=self.image_resolution,
            center_crop=data.center_crop,
            random_flip=data.random_flip,
            device=accelerator.device,
            is_main_process=accelerator.is_main_process,
        )
        source = LatentImages(images.images, stats, info, data.random_flip)
        logger.info(
            "Latent diffusion: %d px images are %s latents of the %s %s (scaled by %g); the UNet trains on those.",
            self.image_resolution, "x".join(map(str, source.sample_shape)), info.class_name, info.name,
            info.scaling_factor,
        )  # fmt: skip
        return source

    @contextlib.contextmanager
    def vae_on_device(self):
        """The VAE on the accelerator for a preview or an evaluation, then back on the CPU (and its memory freed)."""
        self.vae.to(self.accelerator.device)
        try:
            yield self.vae
        finally:
            self.vae.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    @contextlib.contextmanager
    def sampling_extras(self):
        """Previews decode: the VAE (on the accelerator while the grid is drawn) and the run's scaling factor."""
        with self.vae_on_device() as vae:
            yield {"vae": vae, "latent_scaling_factor": self.vae_info.scaling_factor}

    def export(self, folder: Path) -> None:
        """The pipeline with its `vae/` (saved from the CPU copy) and the run's latent scaling factor."""
        with ema_weights(self.ema, self.base_unet):
            parts = PipelineParts(
                self.base_unet, self.noise_scheduler, self.data.label_names, self.vae, self.vae_info.scaling_factor
            )
            export_pipeline(parts, folder)

    def hyperparameters(self) -> dict[str, Any]:
        info = self.vae_info
        return {
            **super().hyperparameters(),
            "resolution": self.image_resolution,
            "latent_shape": "x".join(str(n) for n in self.data.sample_shape),
            "latent_scaling_factor_effective": info.scaling_factor,
            "vae": info.name,
            "vae_class": info.class_name,
            "vae_license": vae_license(info, self.configs.data.cache_dir) or "",
            "latent_cache": str(self.latent_cache),
        }
