"""The one place a `DDPMHubPipeline` is assembled from trained parts.

Training's previews, evaluations and exports, the distiller's students and scores, and the explorer's samplers all
build their pipeline here, so that none of them forgets a part: a latent model's `vae` and scaling factor, a
conditional model's class names, a distilled student's own step count, an upscaler's low resolution.

    parts = PipelineParts(unet, noise_scheduler, label_names=["cat", "dog"])
    pipeline = parts.pipeline("dpmpp_2m")              # the same modules, a scheduler of its own
    parts = PipelineParts.of(DDPMHubPipeline.from_pretrained("org/cats-ddpm"))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from diffusers import UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .pipeline import DDPMHubPipeline


@dataclass(frozen=True)
class PipelineParts:
    """What a pipeline is made of.

    Args:
        unet (`UNet2DModel`): the denoiser (shared, never copied, by every pipeline built from these parts).
        scheduler (`SchedulerMixin`): the training scheduler (its config is the model's noise schedule).
        label_names (`list[str]`, *optional*): a class-conditional model's class names, in id order.
        vae (*optional*): a latent model's `AutoencoderKL` or `VQModel`.
        latent_scaling_factor (`float`, *optional*): with a `vae`, the factor its latents are scaled by.
        default_num_inference_steps (`int`, *optional*): the steps `pipe()` takes by default (a student's own).
        low_resolution (`int`, *optional*): a super-resolution model's input size.
        low_res_noise_max (`int`, *optional*): with `low_resolution`, the highest augmentation level it was trained at.
        low_res_upsampling (`str`, *optional*): with `low_resolution`, how its input is upsampled ("bicubic").
    """

    unet: UNet2DModel
    scheduler: SchedulerMixin
    label_names: list[str] | None = None
    vae: Any = None
    latent_scaling_factor: float | None = None
    default_num_inference_steps: int | None = None
    low_resolution: int | None = None
    low_res_noise_max: int | None = None
    low_res_upsampling: str | None = None

    @classmethod
    def of(cls, pipeline: DDPMHubPipeline) -> PipelineParts:
        """The parts of a loaded pipeline (every component and saved setting it has)."""
        return cls(
            unet=pipeline.unet,
            scheduler=pipeline.scheduler,
            label_names=pipeline.label_names,
            vae=getattr(pipeline, "vae", None),
            latent_scaling_factor=pipeline.latent_scaling_factor,
            default_num_inference_steps=pipeline.config.get("default_num_inference_steps"),
            low_resolution=pipeline.config.get("low_resolution"),
            low_res_noise_max=pipeline.config.get("low_res_noise_max"),
            low_res_upsampling=pipeline.config.get("low_res_upsampling"),
        )

    def replace(self, **changes: Any) -> PipelineParts:
        return dataclasses.replace(self, **changes)

    def pipeline(self, sampler: str | None = None, *, progress_bar: bool = False, **overrides) -> DDPMHubPipeline:
        """A `DDPMHubPipeline` of these parts; with `sampler`, a new scheduler of that name built from the training
        scheduler's config (`overrides` go to it), so that pipelines built side by side never share one."""
        pipeline = DDPMHubPipeline(
            unet=self.unet,
            scheduler=self.scheduler,
            label_names=self.label_names,
            vae=self.vae,
            latent_scaling_factor=self.latent_scaling_factor,
            default_num_inference_steps=self.default_num_inference_steps,
            low_resolution=self.low_resolution,
            low_res_noise_max=self.low_res_noise_max,
            low_res_upsampling=self.low_res_upsampling,
        )
        if sampler is not None:  # `set_sampler` also gives "ddpm" a learned variance the UNet outputs
            pipeline.set_sampler(sampler, **overrides)
        pipeline.set_progress_bar_config(disable=not progress_bar)
        return pipeline
