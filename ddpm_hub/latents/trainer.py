"""`LatentTrainer`: the `Trainer` on cached VAE latents (`train_unconditional.py --vae_name_or_path ...`).

It changes only what a latent run does differently: the plan (the UNet's sample size and channels follow the VAE,
checked before anything heavy), the data (`LatentImages`, encoded once and cached), and every place that turns
latents into pixels (previews, evaluation, the exported pipeline with its `vae/`, the model card). The VAE stays on
the CPU during training and visits the accelerator only to encode, and to decode previews and evaluation samples.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch

from ..evaluation.during_training import Evaluator
from ..export import ema_weights, export_pipeline
from ..training import Trainer, plan_model, reported_as_setup_errors
from ..training.sources import InMemoryImages
from .cache import cached_latents, default_cache_root
from .plan import plan_latent_model
from .source import LatentImages
from .vae import load_vae, read_vae_info, vae_license

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
        with reported_as_setup_errors():
            self.vae_info = read_vae_info(
                model_config.vae_name_or_path,
                model_config.vae_subfolder,
                model_config.latent_scaling_factor,
                data_config.cache_dir,
            )
            plan, self.image_resolution = plan_latent_model(
                model_config, self.vae_info, plan_model, data_config.cache_dir
            )
        super().check(cleanup)
        self.plan = plan  # the UNet sized for the latents (plan.resolution is the latent grid's side)
        self.evaluator = LatentEvaluator(self.run_config, self.output_dir, self)

    def load_data(self) -> LatentImages:
        """Decode the images at the image resolution, then encode them once (main process first: the others read
        its cache; `setup` calls this inside `accelerator.main_process_first()`)."""
        data, info, accelerator = self.configs.data, self.vae_info, self.accelerator
        channels = info.config.get("in_channels", 3)
        images = InMemoryImages.load(data, resolution=self.image_resolution, channels=channels, seed=self.data_seed())
        self.vae = load_vae(info, data.cache_dir)
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
            export_pipeline(
                self.base_unet,
                self.noise_scheduler,
                folder,
                label_names=self.data.label_names,
                vae=self.vae,
                latent_scaling_factor=self.vae_info.scaling_factor,
            )

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
