# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""Super-resolution with a DDPM, as a mixin of `DDPMHubPipeline`: SR3 (Saharia et al. 2021) and the upscaling stages
of cascaded diffusion (Ho et al. 2021).

Shipped beside the weights with `pipeline.py` (torch, numpy, PIL and diffusers only). It is the one place the
low-resolution input of an upscaler is made, for training, sampling and evaluation alike:

    y   = down(x)                                  antialiased bicubic downsampling to the low resolution
    u   = up(y)                                    bicubic upsampling back to the output size
    z_s = sqrt(abar_s) u + sqrt(1 - abar_s) eps    Gaussian conditioning augmentation at level s (Ho et al. 2021)

with abar_0 = 1 (level 0 is the clean input) and abar_s the model's own alpha_bar at training timestep s - 1 for
s >= 1 (the forward process of DDPM eq. 4 at t = s). The UNet sees x_t and z_s as its input channels, x_t first (the
order of diffusers' upscalers; SR3 eq. 5's f(x, y_t, gamma)), and s through its class embedding
(`class_embed_type="timestep"`), as `IFSuperResolutionPipeline` and `StableDiffusionUpscalePipeline` pass their
`noise_level` as `class_labels`. Random augmentation levels in training make the model robust to the artefacts of a
base model's samples; at sampling time the level is the user's (`noise_level`, 0 by default).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_editing import _image_size

# How the low-resolution image is brought to the output size before the UNet sees it (`low_res_upsampling`).
UPSAMPLING_MODES = ("bicubic",)


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] at `size` x `size`: bicubic with antialiasing (as PIL's BICUBIC resize), which
    averages over the pixels each output pixel covers instead of sampling and aliasing; clipped to [-1, 1]."""
    resized = F.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return resized.clamp(-1, 1)


def upsample(images: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Images (N, C, h, w) in [-1, 1] at `size` x `size`, by bicubic interpolation (SR3's input, and the baseline an
    upscaler is measured against); clipped to [-1, 1], since the cubic kernel overshoots at edges."""
    if mode not in UPSAMPLING_MODES:
        raise ValueError(f"Unknown upsampling {mode!r}; choose one of: {', '.join(UPSAMPLING_MODES)}.")
    return F.interpolate(images.float(), size=(size, size), mode=mode, align_corners=False).clamp(-1, 1)


def augmentation_alpha_bar(alphas_cumprod: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """abar_s of augmentation levels s (N,): 1 at s = 0 (no noise), the schedule's alpha_bar at timestep s - 1 above."""
    padded = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod]).to(levels.device)
    return padded[levels]


def low_res_condition(
    low_res: torch.Tensor,
    size: int,
    levels: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    noise: torch.Tensor,
    mode: str = "bicubic",
) -> torch.Tensor:
    """z_s: low-resolution images (N, C, h, w) in [-1, 1] upsampled to `size` and noised to levels s (N,) with `noise`
    (N, C, size, size): z_s = sqrt(abar_s) up(y) + sqrt(1 - abar_s) eps (Gaussian conditioning augmentation,
    Ho et al. 2021)."""
    upsampled = upsample(low_res, size, mode)
    alpha_bar = augmentation_alpha_bar(alphas_cumprod, levels).to(upsampled).view(-1, 1, 1, 1)
    return alpha_bar.sqrt() * upsampled + (1 - alpha_bar).sqrt() * noise.to(upsampled)


def _cast_to_weights(module: torch.nn.Module, args: tuple) -> tuple:
    weight = next(module.parameters())
    return tuple(arg.to(weight.dtype) if torch.is_tensor(arg) and arg.is_floating_point() else arg for arg in args)


def cast_level_embedding_input(unet: UNet2DModel) -> None:
    """Let a half-precision UNet take its noise level: `UNet2DModel` feeds the float32 sinusoidal embedding of the
    level (`time_proj`) to a class embedding whose weights may be fp16 or bf16, which torch refuses to multiply."""
    embedding = unet.class_embedding
    if not getattr(embedding, "_casts_to_weights", False):
        embedding.register_forward_pre_hook(_cast_to_weights)
        embedding._casts_to_weights = True


def _check_upscaler_unet(config, low_resolution) -> None:
    """An upscaler's UNet: the level through a timestep class embedding, [x_t, z_s] in, x_t's channels out (or twice
    them, for learned variances), square, its side a multiple of `low_resolution`."""
    if config.get("class_embed_type") != "timestep":
        raise ValueError(
            'A super-resolution UNet takes its noise level through class_embed_type="timestep", got '
            f"{config.get('class_embed_type')!r}."
        )
    channels, size = config.in_channels // 2, config.sample_size
    if config.in_channels % 2 or config.out_channels not in (channels, 2 * channels):
        raise ValueError(
            f"A super-resolution UNet takes x_t and the upsampled image (2 x C channels) and predicts C; got "
            f"in_channels {config.in_channels} and out_channels {config.out_channels}."
        )
    if not isinstance(size, int) or isinstance(low_resolution, bool) or not isinstance(low_resolution, int):
        raise ValueError(f"`low_resolution` must be an integer, the UNet square; got {low_resolution!r}, {size}.")
    if not 0 < low_resolution < size or size % low_resolution:
        raise ValueError(
            f"`low_resolution` {low_resolution} must divide the UNet's sample size {size} and be smaller than it."
        )


class DDPMHubSuperResolutionMixin:
    """`upscale` and the low-resolution input channels of a super-resolution `DDPMHubPipeline` (see module docstring).

    A pipeline is an upscaler when it was built with `low_resolution`; the three settings below are then saved in
    `model_index.json`, so that the pipeline code beside the weights knows how to make the UNet's input.
    """

    # (z_s, levels) while `upscale` denoises: what `_unet` appends to x_t and passes as class labels.
    _low_res_input: tuple[torch.Tensor, torch.Tensor] | None = None

    def _init_super_resolution(
        self, unet: UNet2DModel, low_resolution: int | None, noise_max: int | None, upsampling: str | None
    ) -> None:
        """Check an upscaler's UNet against its settings and record them in the config; check a plain UNet has none."""
        if low_resolution is None:
            if noise_max is not None or upsampling is not None:
                raise ValueError("`low_res_noise_max` and `low_res_upsampling` apply to a super-resolution model only.")
            if unet.config.get("class_embed_type") is not None:
                raise ValueError(
                    f"DDPMHubPipeline supports class ids through `num_class_embeds` only, not class_embed_type "
                    f"{unet.config.class_embed_type!r} (a super-resolution model with `low_resolution` takes "
                    '"timestep", its noise level).'
                )
            return
        if getattr(self, "vae", None) is not None:
            raise ValueError("Latent super-resolution is not supported: an upscaler works in pixels (no `vae`).")
        _check_upscaler_unet(unet.config, low_resolution)
        noise_max = 0 if noise_max is None else noise_max
        steps = self.scheduler.config.num_train_timesteps
        if isinstance(noise_max, bool) or not isinstance(noise_max, (int, np.integer)) or not 0 <= noise_max <= steps:
            raise ValueError(f"`low_res_noise_max` must be an integer in [0, {steps}], got {noise_max!r}.")
        upsampling = upsampling or UPSAMPLING_MODES[0]
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"`low_res_upsampling` {upsampling!r} is not one of: {', '.join(UPSAMPLING_MODES)}.")
        self.register_to_config(
            low_resolution=int(low_resolution), low_res_noise_max=int(noise_max), low_res_upsampling=upsampling
        )
        cast_level_embedding_input(unet)

    @property
    def low_resolution(self) -> int | None:
        """The side of the images an upscaler takes; `None` for a model that generates from noise."""
        return self.config.get("low_resolution")

    @property
    def is_upscaler(self) -> bool:
        return self.config.get("low_resolution") is not None

    @property
    def low_res_noise_max(self) -> int:
        """The highest conditioning-augmentation level the upscaler was trained with (levels 0 to it)."""
        return self.config.get("low_res_noise_max") or 0

    @property
    def low_res_channels(self) -> int:
        """The UNet input channels that hold the upsampled low-resolution image: half of them for an upscaler."""
        return self.unet.config.in_channels // 2 if self.is_upscaler else 0

    def _with_low_res_input(self, model_input: torch.Tensor, class_labels: torch.Tensor | None):
        """The UNet's input and class labels at a step: [x_t, z_s] and the levels s for an upscaler, else unchanged."""
        if not self.is_upscaler:
            return model_input, class_labels
        if self._low_res_input is None:
            raise ValueError(
                f"This is a super-resolution model ({self.low_resolution} to {self.unet.config.sample_size} px): it "
                "needs a low-resolution image; call `pipe.upscale(image)` (`ddpm-hub sample MODEL --low_res_image`)."
            )
        condition, levels = self._low_res_input
        return torch.cat([model_input, condition.to(model_input)], dim=1), levels

    @contextlib.contextmanager
    def _conditioned_on(self, condition: torch.Tensor, levels: torch.Tensor):
        self._low_res_input = (condition, levels)
        try:
            yield
        finally:
            self._low_res_input = None

    def _prepare_low_res(self, image) -> torch.Tensor:
        """Low-resolution images (PIL, arrays or tensors in [0, 1], or a list) as a batch in [-1, 1]; other sizes are
        refused, since resizing them silently would upscale something else than what was given."""
        low = self.low_resolution
        items = image if isinstance(image, (list, tuple)) else [image]
        for item in items:
            size = _image_size(item)
            if size is not None and size != (low, low):
                raise ValueError(
                    f"`image` must be {low}x{low} pixels, the size this model upscales from (to "
                    f"{self.unet.config.sample_size}x{self.unet.config.sample_size}); got {size[1]}x{size[0]}."
                )
        return self._prepare_images(image, "image", size=(low, low))

    def prepare_noise_levels(self, noise_level, batch_size: int) -> torch.Tensor:
        """The augmentation level s of every image, checked against the levels the model was trained with."""
        if noise_level is None:
            noise_level = 0
        if isinstance(noise_level, torch.Tensor):
            noise_level = noise_level.reshape(-1).tolist()
        levels = list(noise_level) if isinstance(noise_level, (list, tuple)) else [noise_level] * batch_size
        highest = self.low_res_noise_max
        for level in levels:
            if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= highest:
                raise ValueError(
                    f"`noise_level` must be an integer in [0, {highest}] (the model was trained with augmentation "
                    f"levels up to low_res_noise_max = {highest}), got {level!r}."
                )
        if len(levels) != batch_size:
            raise ValueError(f"Got {len(levels)} noise levels for {batch_size} images; pass one, or one per image.")
        return torch.tensor(levels, dtype=torch.long, device=self._execution_device)

    @torch.no_grad()
    def upscale(
        self,
        image,
        noise_level: int | Sequence[int] | torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ):
        r"""
        Upscale low-resolution images with a super-resolution model (SR3; a stage of cascaded diffusion).

        Each image is upsampled bicubically, noised to `noise_level` (conditioning augmentation) and given to the
        UNet beside x_t at every step of the current sampler, from pure noise to the high-resolution image.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                Images of exactly `low_resolution` x `low_resolution` pixels (arrays HxWxC and tensors CxHxW in
                [0, 1]; a batch as a list or a 4-d array/tensor). Other sizes are refused.
            noise_level (`int` or `list[int]`, *optional*, defaults to 0):
                The conditioning-augmentation level s, in [0, `low_res_noise_max`], one for all images or one per
                image. 0 keeps the input as it is; a higher level lets the model depart further from it, which can
                hide the artefacts of a base model's samples (conditioning augmentation, Ho et al. 2021).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes upscaling deterministic; with one per image, image i depends only on `generator[i]`. x_T is
                drawn first, then the augmentation noise (drawn at every level, so x_T does not depend on it).
            num_inference_steps (`int`, *optional*):
                The number of denoising steps; defaults to the pipeline's `default_num_inference_steps` (1000).
            eta (`float`, *optional*, defaults to 0.0):
                The DDIM eta.
            latents (`torch.Tensor`, *optional*):
                The starting noise x_T, of shape `(batch_size, *sample_shape)`.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` or `"pt"` (in [0, 1]), or `"latent"` (the samples in [-1, 1]).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubPipelineOutput`] instead of a tuple.
            callback_on_step_end, callback_on_step_end_tensor_inputs:
                As for `__call__`.

        Example:

        ```py
        >>> import PIL.Image, torch
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/emoji-sr-16-64").set_sampler("dpmpp_2m")
        >>> low_res = PIL.Image.open("emoji16.png").convert("RGB")  # 16x16
        >>> image = pipe.upscale(low_res, num_inference_steps=25, generator=torch.Generator().manual_seed(0)).images[0]
        ```
        """
        if not self.is_upscaler:
            raise ValueError(
                "This model is not a super-resolution model (its model_index.json has no `low_resolution`); it "
                "generates from noise: call `pipe(...)`."
            )
        low_res = self._prepare_low_res(image).to(self._execution_device)
        batch_size = low_res.shape[0]
        num_inference_steps = self.resolve_num_inference_steps(num_inference_steps)
        self.check_inputs(batch_size, num_inference_steps, output_type, latents, generator, 1)
        levels = self.prepare_noise_levels(noise_level, batch_size)
        tensor_inputs = self._callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)

        # 1. Set the timesteps and draw x_T, then the augmentation noise.
        latents, timesteps = self._starting_noise(batch_size, generator, latents, num_inference_steps)
        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=torch.float32)
        # 2. The low-resolution input z_s, on the training schedule whatever sampler is plugged in now.
        alphas_cumprod = DDPMScheduler.from_config(self.scheduler.config).alphas_cumprod
        size = self.unet.config.sample_size
        condition = low_res_condition(low_res, size, levels, alphas_cumprod, noise, self.config.low_res_upsampling)
        # 3. Denoise, x_T -> x_0, with [x_t, z_s] and s at every step.
        with self._conditioned_on(condition, levels):
            latents, *_ = self._denoise(
                latents,
                timesteps,
                self._steps(generator, eta),
                output_type=output_type,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=tensor_inputs,
            )
        return self._editing_output(self.postprocess(latents, output_type), return_dict)
