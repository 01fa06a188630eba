"""Super-resolution as a part of a run: the UNet learns to upscale (SR3, Saharia et al. 2021) with conditioning
augmentation (cascaded diffusion, Ho et al. 2021).

    train_unconditional.py --low_resolution 16 --resolution 64 --low_res_noise_max 100
    train_unconditional.py --model sr-16-64                       # the preset implies 16 -> 64

`SuperResolution` plugs into the `Trainer` at its hooks (`ddpm_hub.training.parts`): it gives the UNet the
low-resolution input channels and the noise-level embedding (`shape_model`), hands the training step the function
that makes the input from each clean batch (`step_options()["conditioning"]`, which the Trainer puts in
`RunConfigs.step_options` for the step factory, `train_step.make_train_step`: downsampled, upsampled, noised to a
random level, with the pipeline's own resampling, `pipeline_superres`), and makes every pipeline of the run an upscaler
(`pipeline_parts`), whose previews and evaluations upscale the data's first images. Any data source works: the input
is made from the clean batch inside the step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..pipeline_superres import UPSAMPLING_MODES, downsample, low_res_condition
from ..training.parts import ModelShape, RunPart

# The highest conditioning-augmentation level drawn when --low_res_noise_max is not given: alpha_bar_100 is 0.97 on
# the cosine schedule (the default; noise of std 0.17) and 0.90 on the linear one (std 0.32): enough to hide a small
# base model's artefacts without drowning the input.
DEFAULT_NOISE_MAX = 100


class SuperResolution(RunPart):
    """The part that makes a run train an upscaler; see the module docstring.

    Args:
        low_resolution (`int`): the side of the low-resolution input (it must divide the run's resolution).
        noise_max (`int`, *optional*): the highest augmentation level drawn (`--low_res_noise_max`; default 100).
    """

    name = "super_resolution"

    def __init__(self, low_resolution: int, noise_max: int | None = None):
        self.low_resolution = low_resolution
        self.noise_max = DEFAULT_NOISE_MAX if noise_max is None else noise_max
        self.upsampling = UPSAMPLING_MODES[0]

    def check(self, configs):
        """Refuse what an upscaler cannot be, in one line each, before anything heavy."""
        from ..defaults import resolve_model_defaults

        model, data = configs.model, configs.data
        if data.class_conditional or data.class_column:
            raise ValueError("Class-conditional super-resolution is not supported: leave out --class_conditional.")
        # The run's T before the Trainer fills the defaults: a new model's, or a fine-tuned pipeline's own.
        steps = resolve_model_defaults(model, data.cache_dir).ddpm_num_steps
        if self.noise_max > steps:
            raise ValueError(f"--low_res_noise_max {self.noise_max} exceeds the {steps} timesteps of the schedule.")
        if model.resolution is not None:
            self.image_resolution(model.resolution)
        return dataclasses.replace(configs, model=dataclasses.replace(model, low_res_noise_max=self.noise_max))

    def shape_model(self, shape: ModelShape) -> ModelShape:
        """x_t and the upsampled low-resolution image side by side (as many channels again), and the augmentation
        level through the class embedding, as diffusers' upscalers take their `noise_level`."""
        channels = shape.sample_channels or 3
        note = f"a super-resolution UNet takes x_t and the low-resolution image: {channels} + {channels} channels"
        return shape.replace(
            condition_channels=shape.condition_channels + channels,
            class_embed_type="timestep",
            notes=(*shape.notes, note),
        )

    def image_resolution(self, sample_size: int) -> int:
        """The run's resolution, checked against the low resolution (the plan's, a preset's when not given)."""
        if sample_size % self.low_resolution or self.low_resolution >= sample_size:
            raise ValueError(
                f"--low_resolution {self.low_resolution} must divide --resolution {sample_size} and be smaller."
            )
        return sample_size

    def step_options(self) -> dict[str, Any]:
        """What `make_train_step` reads from `RunConfigs.step_options`: the conditioning of each batch."""
        return {"conditioning": self.conditioning}

    def conditioning(self, clean_images: torch.Tensor, alphas_cumprod: torch.Tensor):
        """The UNet's extra input and its class labels for a clean batch (in [-1, 1]): z_s (`low_res_condition`) and
        the levels s, uniform in 0..`noise_max`. Two random draws, after the data's `to_model_input`: s, then the
        augmentation noise (the step's contract, `training.seams.Step`)."""
        size, batch = clean_images.shape[-1], clean_images.shape[0]
        low_res = downsample(clean_images, self.low_resolution)
        levels = torch.randint(0, self.noise_max + 1, (batch,), device=clean_images.device)
        noise = torch.randn(clean_images.shape, device=clean_images.device, dtype=torch.float32)
        condition = low_res_condition(low_res, size, levels, alphas_cumprod, noise, self.upsampling)
        return condition.to(clean_images.dtype), levels

    def pipeline_parts(self, parts):
        """Every pipeline of the run is an upscaler (its previews and evaluations upscale the data's first images)."""
        return parts.replace(
            low_resolution=self.low_resolution, low_res_noise_max=self.noise_max, low_res_upsampling=self.upsampling
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "low_resolution": self.low_resolution,
            "low_res_noise_max": self.noise_max,
            "low_res_upsampling": self.upsampling,
        }
