# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""Unconditional image generation with a DDPM-trained `UNet2DModel` and any compatible diffusers scheduler.

This file stands alone (torch, numpy, PIL and diffusers only): `save_pretrained` copies it into every saved
pipeline as `pipeline.py`, so the full class can be loaded from a folder or a Hub repo by anyone, with
`DiffusionPipeline.from_pretrained(repo, custom_pipeline=repo, trust_remote_code=True)`, without ddpm-hub.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch

import diffusers
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


# Short sampler names, as used by common UIs, mapped onto diffusers scheduler classes and the config overrides
# that make each one what its name says. Every entry is built with `from_config`, so it keeps the training
# schedule (betas, prediction type, number of train timesteps) of the model.
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "lms": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
}

OUTPUT_TYPES = ("pil", "np", "pt")

# Beta schedules that every scheduler in SAMPLERS can rebuild from its name. Models trained with any other
# schedule carry `trained_betas` in their scheduler config instead (see ddpm_hub.schedules).
PORTABLE_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def scheduler_from_name(name: str, config, **overrides) -> SchedulerMixin:
    """Build the scheduler called `name` (a key of `SAMPLERS`) from an existing scheduler `config`.

    Raises `ValueError` for an unknown name, and for a zero-terminal-SNR model paired with a scheduler that
    cannot rescale its betas (it would silently sample from the wrong noise levels).
    """
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}.")
    class_name, defaults = SAMPLERS[name]
    scheduler_cls = getattr(diffusers, class_name)
    if config.get("rescale_betas_zero_snr") and "rescale_betas_zero_snr" not in inspect.signature(
        scheduler_cls.__init__
    ).parameters:
        raise ValueError(
            f"Sampler {name!r} ({class_name}) cannot sample a model trained with zero terminal SNR; "
            "use one of: ddpm, ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc."
        )
    return scheduler_cls.from_config(config, **{**defaults, **overrides})


def split_prediction(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_0, eps) from a model output at a step with alpha_bar_t, in the variance-preserving scale.

    DDPM eq. 15 for eps models; v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022, Sec. 4) for
    v models; x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps (DDPM eq. 4) gives the other half in every case.
    """
    alpha, sigma = alpha_prod_t.sqrt(), (1 - alpha_prod_t).sqrt()
    if prediction_type == "epsilon":
        return (sample - sigma * model_output) / alpha, model_output
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * model_output, sigma * sample + alpha * model_output
    return model_output, (sample - alpha * model_output) / sigma


def repaint_levels(num_levels: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """The noise levels RePaint visits after starting at `num_levels` (pure noise); 0 is the clean image.

    A level below the previous one is a denoising step, one above it a resampling jump (Lugmayr et al. 2022,
    Sec. 4.2, Fig. 9): after every `jump_length` steps down, go `jump_length` levels back up, `jump_n_sample - 1`
    times. The same schedule as diffusers' `RePaintScheduler.set_timesteps`, counted in levels.
    """
    jumps = {level: jump_n_sample - 1 for level in range(0, num_levels - jump_length, jump_length)}
    levels, level = [], num_levels
    while level >= 1:
        level -= 1
        levels.append(level)
        if jumps.get(level, 0) > 0:
            jumps[level] -= 1
            for _ in range(jump_length):
                level += 1
                levels.append(level)
    return levels


def slerp(start: torch.Tensor, end: torch.Tensor, weight: float, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation between two noise tensors, per batch item (DDIM, Song et al. 2021, Sec. 5.3).

    Gaussian noise concentrates near a sphere, so a straight line between two noises passes through unlikely,
    too-short ones; the great circle keeps the norm. Falls back to a straight line for nearly parallel inputs.
    """
    start_flat, end_flat = start.flatten(1).double(), end.flatten(1).double()
    cos = (start_flat * end_flat).sum(1) / (start_flat.norm(dim=1) * end_flat.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1))
    sin_theta = torch.sin(theta)
    parallel = cos.abs() > dot_threshold
    start_weight = torch.where(parallel, 1 - weight, torch.sin((1 - weight) * theta) / sin_theta)
    end_weight = torch.where(parallel, torch.full_like(cos, weight), torch.sin(weight * theta) / sin_theta)
    shape = (-1,) + (1,) * (start.ndim - 1)
    mixed = start_weight.view(shape) * start.double() + end_weight.view(shape) * end.double()
    return mixed.to(start.dtype)


def _image_size(image) -> tuple[int, int] | None:
    """(height, width) of a PIL image, HWC/NHWC array or CHW/NCHW tensor (the first of a list); None if not an image."""
    if isinstance(image, (list, tuple)) and image:
        image = image[0]
    if isinstance(image, PIL.Image.Image):
        return image.size[1], image.size[0]
    if isinstance(image, np.ndarray) and image.ndim in (2, 3, 4):
        return tuple(image.shape[:2]) if image.ndim in (2, 3) else tuple(image.shape[1:3])
    if isinstance(image, torch.Tensor) and image.ndim in (2, 3, 4):
        return tuple(image.shape[-2:])
    return None


@dataclass
class DDPMHubPipelineOutput(ImagePipelineOutput):
    """Output of [`DDPMHubPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The generated images, in the format given by `output_type`.
        trajectory (`list`, *optional*):
            With `return_trajectory=True`: the noisy sample x_t fed to the model at every `trajectory_stride`-th
            step (in the variance-preserving scale, whatever the scheduler), each in the format of `images`.
        pred_original_trajectory (`list`, *optional*):
            The model's prediction of the clean image x_0 at the same steps as `trajectory`.
        trajectory_timesteps (`list[int]`, *optional*):
            The timestep t of each entry of `trajectory`.
    """

    trajectory: list | None = None
    pred_original_trajectory: list | None = None
    trajectory_timesteps: list[int] | None = None


@dataclass
class DDPMHubInversionOutput(BaseOutput):
    """Output of [`DDPMHubPipeline.invert`].

    Args:
        latents (`torch.Tensor`):
            The starting noise x_T, of shape `(batch_size, channels, height, width)`, that deterministic DDIM with the
            same `num_inference_steps` turns back into the images; pass it as `latents` to the pipeline.
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            x_T shown as images (clipped to [-1, 1]), in the format given by `output_type`.
    """

    latents: torch.Tensor
    images: list | np.ndarray | torch.Tensor


class DDPMHubPipeline(DiffusionPipeline):
    r"""
    Pipeline for unconditional image generation from a DDPM-trained `UNet2DModel`.

    Works with any diffusers scheduler built from the training scheduler's config (DDPM, DDIM, PNDM, Euler,
    Euler ancestral, Heun, LMS, DPM-Solver++, UniPC, DEIS); pick one by name with [`~DDPMHubPipeline.set_sampler`].
    Beyond [`~diffusers.DDPMPipeline`] it takes `latents` and `eta`, calls `callback_on_step_end`, can return the
    denoising trajectory, and noises images forward with [`~DDPMHubPipeline.q_sample`].

    The same model edits images: [`~DDPMHubPipeline.img2img`] (SDEdit), [`~DDPMHubPipeline.inpaint`] (RePaint),
    [`~DDPMHubPipeline.invert`] (DDIM inversion) and [`~DDPMHubPipeline.interpolate`].

    Parameters:
        unet ([`UNet2DModel`]):
            The denoiser, predicting noise (epsilon), v or the clean sample as its scheduler config says.
        scheduler ([`SchedulerMixin`]):
            The scheduler used to denoise; its config holds the training noise schedule.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        grayscale = unet.config.in_channels == 1
        # Pixels, not latents: no VAE scaling; converts inputs of q_sample and outputs of every call.
        self.image_processor = VaeImageProcessor(
            vae_scale_factor=1, do_convert_rgb=not grayscale, do_convert_grayscale=grayscale, do_resize=True
        )

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images this pipeline generates."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return self.unet.config.in_channels, height, width

    def set_sampler(self, name: str, **overrides) -> "DDPMHubPipeline":
        """Swap in the scheduler called `name` (see `SAMPLERS`), keeping the model's training schedule.

        Example:

        ```py
        >>> pipe.set_sampler("dpmpp_2m")
        >>> images = pipe(num_inference_steps=20).images
        ```
        """
        self.scheduler = scheduler_from_name(name, self.scheduler.config, **overrides)
        return self

    def check_inputs(self, batch_size, num_inference_steps, output_type, latents, generator, trajectory_stride):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}.")
        if num_inference_steps > self.scheduler.config.num_train_timesteps:
            raise ValueError(
                f"`num_inference_steps` ({num_inference_steps}) cannot exceed the model's "
                f"{self.scheduler.config.num_train_timesteps} training timesteps."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if latents is not None and tuple(latents.shape) != (batch_size, *self.sample_shape):
            raise ValueError(
                f"`latents` must have shape {(batch_size, *self.sample_shape)}, got {tuple(latents.shape)}."
            )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}; pass one per image.")
        if not isinstance(trajectory_stride, int) or trajectory_stride < 1:
            raise ValueError(f"`trajectory_stride` must be a positive integer, got {trajectory_stride!r}.")

    def _model_output(
        self,
        model_input: torch.Tensor,
        t,
        class_labels: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """The UNet's prediction (noise, v or x_0) at step t: the one place every sampling and editing loop calls it."""
        return self.unet(model_input.to(self.unet.dtype), t).sample.float()

    def _step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        # Schedulers differ in what `step` accepts: only DDIM-like ones take `eta`, only stochastic ones a generator.
        accepted = inspect.signature(self.scheduler.step).parameters
        kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            kwargs["eta"] = eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    def _predict_original(self, model_output: torch.Tensor, sample: torch.Tensor, t) -> torch.Tensor:
        """x_0 from the model output at step t in the variance-preserving scale (DDPM eq. 15; v: Salimans & Ho 2022)."""
        alpha_prod_t = self.scheduler.alphas_cumprod.to(sample.device)[int(t)].to(sample.dtype)
        return split_prediction(model_output, sample, alpha_prod_t, self.scheduler.config.prediction_type)[0]

    def postprocess(self, sample: torch.Tensor, output_type: str):
        """Map a sample in [-1, 1] to images of `output_type` ("pil", "np" or "pt" in [0, 1])."""
        return self.image_processor.postprocess(sample.float().clamp(-1, 1), output_type=output_type)

    def _denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        step_kwargs: dict[str, Any],
        *,
        class_labels: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        output_type: str = "pil",
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = (),
        return_trajectory: bool = False,
        trajectory_stride: int = 1,
    ) -> tuple[torch.Tensor, list, list, list[int]]:
        """The denoising loop of `__call__` over `timesteps`, from `latents` at the first of them.

        Shared by `__call__` (all timesteps, from noise; also `interpolate`'s decoding) and `img2img` (the last ones,
        from a noised image), so that every entry point samples with the same loop. The scheduler's timesteps (and
        begin index) must already be set. Returns the final latents and the trajectory lists.
        """
        trajectory, pred_original_trajectory, trajectory_timesteps = [], [], []
        for i, t in enumerate(self.progress_bar(timesteps)):
            # 2. Predict the model output (noise, v or x_0) from x_t.
            model_input = self.scheduler.scale_model_input(latents, t)
            model_output = self._model_output(model_input, t, class_labels, guidance_scale)

            # 3. Compute the previous sample: x_t -> x_t-1.
            step = self.scheduler.step(model_output, t, latents, **step_kwargs)

            if return_trajectory and (i % trajectory_stride == 0 or i == len(timesteps) - 1):
                pred_original = getattr(step, "pred_original_sample", None)
                if pred_original is None:  # multistep solvers do not return it
                    pred_original = self._predict_original(model_output, model_input, t)
                trajectory.append(self.postprocess(model_input, output_type))
                pred_original_trajectory.append(self.postprocess(pred_original, output_type))
                trajectory_timesteps.append(int(t))

            latents = step.prev_sample
            if callback_on_step_end is not None:
                step_tensors = {"latents": latents}
                callback_kwargs = {name: step_tensors[name] for name in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                latents = callback_outputs.pop("latents", latents)

        return latents, trajectory, pred_original_trajectory, trajectory_timesteps

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        eta: float = 0.0,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        return_trajectory: bool = False,
        trajectory_stride: int = 1,
    ) -> DDPMHubPipelineOutput | tuple:
        r"""
        Generate images.

        Args:
            batch_size (`int`, *optional*, defaults to 1):
                The number of images to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes generation deterministic. With one generator per image, image i depends only on
                `generator[i]`, so a single image of a batch can be regenerated alone.
            num_inference_steps (`int`, *optional*, defaults to 1000):
                The number of denoising steps. DDPM needs about as many as it was trained with; DDIM,
                DPM-Solver++ and UniPC give good images in 20 to 50.
            eta (`float`, *optional*, defaults to 0.0):
                The DDIM eta (η in the DDIM paper, eq. 16): 0 is deterministic DDIM, 1 is DDPM-like. Ignored by
                schedulers that do not take it.
            latents (`torch.Tensor`, *optional*):
                Starting noise of shape `(batch_size, channels, height, width)` from a standard normal; it is
                scaled by the scheduler's `init_noise_sigma`. Drawn from `generator` if not given.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` (`PIL.Image.Image`), `"np"` (`np.ndarray` in [0, 1]) or `"pt"` (`torch.Tensor` in [0, 1]).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubPipelineOutput`] instead of a plain tuple.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called as `callback_on_step_end(self, step, timestep, callback_kwargs)` after every step, with
                `callback_kwargs` holding the tensors named in `callback_on_step_end_tensor_inputs`; the tensors it
                returns replace them.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*, defaults to `["latents"]`):
                The tensors passed to `callback_on_step_end`.
            return_trajectory (`bool`, *optional*, defaults to `False`):
                Also return the noisy samples x_t and the predicted clean images x_0 along the way.
            trajectory_stride (`int`, *optional*, defaults to 1):
                Keep every k-th step of the trajectory (the last step is always kept).

        Example:

        ```py
        >>> import torch
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm").set_sampler("ddim")
        >>> generator = [torch.Generator().manual_seed(seed) for seed in range(4)]
        >>> images = pipe(batch_size=4, generator=generator, num_inference_steps=50).images
        >>> images[0].save("cat.png")
        ```

        Returns:
            [`DDPMHubPipelineOutput`] or `tuple`: the images (and trajectory if asked for); a tuple of the
            non-empty fields when `return_dict` is `False`.
        """
        self.check_inputs(batch_size, num_inference_steps, output_type, latents, generator, trajectory_stride)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"Unknown callback tensor inputs {sorted(unknown)}; allowed: {self._callback_tensor_inputs}.")

        device = self._execution_device
        # Noise is drawn and the sample is kept in float32 whatever the UNet's dtype: per-image seeds then give the
        # same noise in fp16/bf16, and the scheduler's updates do not accumulate half-precision error.
        shape = (batch_size, *self.sample_shape)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents.to(device=device, dtype=torch.float32)

        # 1. Set the timesteps and scale the starting noise (sigma-space schedulers start at sigma_max, not 1).
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if hasattr(self.scheduler, "set_begin_index"):
            # We always start from pure noise. Without this, schedulers locate the first step by searching for its
            # timestep, which goes wrong when rounding repeats a timestep (Karras sigmas on a cosine schedule).
            self.scheduler.set_begin_index(0)
        latents = latents * self.scheduler.init_noise_sigma
        step_kwargs = self._step_kwargs(generator, eta)

        latents, trajectory, pred_original_trajectory, trajectory_timesteps = self._denoise(
            latents,
            timesteps,
            step_kwargs,
            output_type=output_type,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            return_trajectory=return_trajectory,
            trajectory_stride=trajectory_stride,
        )

        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()

        if return_trajectory:
            output = DDPMHubPipelineOutput(images, trajectory, pred_original_trajectory, trajectory_timesteps)
        else:
            output = DDPMHubPipelineOutput(images=images)
        if not return_dict:
            return output.to_tuple()
        return output

    @torch.no_grad()
    def q_sample(
        self,
        image,
        timestep: int | list[int] | torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: torch.Tensor | None = None,
        output_type: str = "pt",
    ):
        r"""
        Noise clean images forward to step t: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4).

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                Clean images; arrays and tensors in [0, 1], resized to the model's sample size.
            timestep (`int`, `list[int]` or `torch.Tensor`):
                The training timestep t, in [0, num_train_timesteps), one for all images or one per image.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Draws eps when `noise` is not given.
            noise (`torch.Tensor`, *optional*):
                The eps to use, of the images' shape.
            output_type (`str`, *optional*, defaults to `"pt"`):
                `"pt"` returns x_t as a tensor in the model's [-1, 1] scale; `"pil"` and `"np"` return viewable images.
        """
        _, height, width = self.sample_shape
        clean = self.image_processor.preprocess(image, height=height, width=width).float()
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        timesteps = torch.as_tensor(timestep, dtype=torch.long).reshape(-1).expand(clean.shape[0])
        if timesteps.min() < 0 or timesteps.max() >= num_train_timesteps:
            raise ValueError(f"`timestep` must lie in [0, {num_train_timesteps}), got {timestep!r}.")
        if noise is None:
            noise = randn_tensor(clean.shape, generator=generator, dtype=torch.float32)
        if tuple(noise.shape) != tuple(clean.shape):
            raise ValueError(f"`noise` must have shape {tuple(clean.shape)}, got {tuple(noise.shape)}.")
        # The forward process is the training scheduler's, whatever sampler is plugged in now.
        forward = DDPMScheduler.from_config(self.scheduler.config)
        noisy = forward.add_noise(clean, noise.to(clean), timesteps)
        if output_type == "pt":
            return noisy
        return self.postprocess(noisy, output_type)

    # Editing: SDEdit, RePaint, DDIM inversion and interpolation on the same model and denoising loop.

    def _prepare_images(self, image, name: str = "image") -> torch.Tensor:
        """Images (PIL, array or tensor in [0, 1], or a list) as a float32 batch in [-1, 1] at the model's size."""
        items = image if isinstance(image, (list, tuple)) else [image]
        if not items or _image_size(image) is None or not all(
            isinstance(item, (PIL.Image.Image, np.ndarray, torch.Tensor)) for item in items
        ):
            shape = f" of shape {tuple(image.shape)}" if hasattr(image, "shape") else ""
            raise ValueError(
                f"`{name}` must be a PIL image, a numpy array (HxWxC) or a torch tensor (CxHxW) in [0, 1], or a list "
                f"of them; got {type(image).__name__}{shape}."
            )
        _, height, width = self.sample_shape
        try:
            images = self.image_processor.preprocess(image, height=height, width=width).float()
        except (ValueError, TypeError) as error:
            raise ValueError(f"`{name}` could not be read as an image: {' '.join(str(error).split())}") from None
        if images.shape[1] != self.sample_shape[0] or not torch.isfinite(images).all():
            raise ValueError(
                f"`{name}` must be finite images with {self.sample_shape[0]} channel(s), "
                f"got shape {tuple(images.shape)}."
            )
        return images

    def _prepare_mask(self, mask_image, image, batch_size: int) -> torch.Tensor:
        """A binary float mask of shape (batch, 1, height, width) at the model's size: 1 where to fill (white)."""
        items = mask_image if isinstance(mask_image, (list, tuple)) else [mask_image]
        masks = []
        for item in items:
            if isinstance(item, PIL.Image.Image):
                mask = torch.from_numpy(np.asarray(item.convert("L"), dtype=np.float32) / 255.0)[None]
            elif isinstance(item, (np.ndarray, torch.Tensor)):
                channels_last = isinstance(item, np.ndarray)  # arrays are HxW(x1), tensors (1x)HxW, as for images
                mask = torch.from_numpy(np.array(item)) if channels_last else item.detach().cpu()
                mask = mask.float() / 255.0 if mask.dtype == torch.uint8 else mask.float()
                shape = tuple(mask.shape)
                if mask.ndim == 2:
                    mask = mask[None]
                elif mask.ndim == 3 and channels_last and shape[-1] == 1:
                    mask = mask[..., 0][None]
                elif mask.ndim == 3 and not channels_last and shape[0] == 1:
                    pass
                elif mask.ndim == 4 and channels_last and shape[-1] == 1:
                    mask = mask[..., 0]
                elif mask.ndim == 4 and not channels_last and shape[1] == 1:
                    mask = mask[:, 0]
                else:
                    raise ValueError(
                        "`mask_image` must have one channel (arrays HxW or HxWx1, tensors HxW or 1xHxW), "
                        f"got shape {shape}."
                    )
            else:
                raise ValueError(
                    f"`mask_image` must be a single-channel PIL image, numpy array or torch tensor (white = fill), "
                    f"got {type(item).__name__}."
                )
            if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
                raise ValueError("`mask_image` values must lie in [0, 1] (or 0 to 255 for uint8 masks).")
            masks.append(mask)
        if len({tuple(mask.shape[-2:]) for mask in masks}) > 1:
            raise ValueError("All masks in `mask_image` must have the same size.")
        mask = torch.cat(masks)
        image_size, mask_size = _image_size(image), tuple(mask.shape[-2:])
        if image_size is not None and mask_size != image_size:
            raise ValueError(
                f"`mask_image` is {mask_size[1]}x{mask_size[0]} but `image` is {image_size[1]}x{image_size[0]}; "
                "they must be the same size."
            )
        if mask.shape[0] not in (1, batch_size):
            raise ValueError(f"Got {mask.shape[0]} masks for {batch_size} images; pass one, or one per image.")
        _, height, width = self.sample_shape
        mask = torch.nn.functional.interpolate(mask[:, None], size=(height, width), mode="bilinear", antialias=True)
        mask = (mask > 0.5).float().expand(batch_size, -1, -1, -1)
        if (mask.flatten(1).sum(1) == 0).any():
            raise ValueError(
                f"`mask_image` has no white pixel at the model's {width}x{height} resolution: nothing to inpaint "
                "(white marks the region to fill, black the region to keep)."
            )
        return mask

    @contextlib.contextmanager
    def _using_scheduler(self, scheduler: SchedulerMixin):
        """Run a block with `scheduler` in place of the user's sampler, and put the sampler back afterwards."""
        original = self.scheduler
        self.scheduler = scheduler
        try:
            yield scheduler
        finally:
            self.scheduler = original

    def _deterministic_ddim(self) -> DDIMScheduler:
        """DDIM on the training schedule, without x_0 clipping, which would make it non-invertible."""
        # Other samplers' default "linspace" spacing becomes "leading", the spacing of the training DDPMScheduler.
        spacing = self.scheduler.config.get("timestep_spacing", "leading")
        spacing = spacing if spacing in ("leading", "trailing") else "leading"
        # Only the keys DDIM knows: the other samplers' own settings (solver order, Karras sigmas...) do not apply.
        known = inspect.signature(DDIMScheduler.__init__).parameters
        config = {key: value for key, value in self.scheduler.config.items() if key in known}
        return DDIMScheduler.from_config(config, clip_sample=False, thresholding=False, timestep_spacing=spacing)

    def _editing_output(self, images, return_dict: bool):
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return DDPMHubPipelineOutput(images=images)

    @torch.no_grad()
    def img2img(
        self,
        image,
        strength: float = 0.8,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> DDPMHubPipelineOutput | tuple:
        r"""
        Image to image: noise the images part of the way and denoise them with the current sampler (SDEdit, Meng et
        al. 2021, Sec. 3, "perturb with SDE, then reverse").

        The sampler's `num_inference_steps` timesteps are set as usual and the last `int(num_inference_steps *
        strength)` of them are run, from the images noised to the first of those by the sampler's own `add_noise`
        (as diffusers' `StableDiffusionImg2ImgPipeline`). Low strength keeps the layout and colours; high strength
        keeps less and less.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The images to edit; arrays and tensors in [0, 1]; resized to the model's sample size.
            strength (`float`, *optional*, defaults to 0.8):
                In [0, 1]: how much noise to add. 0 returns the images unchanged (resized); 1 ignores them and
                starts from pure noise, exactly as `__call__` with the same `generator` does.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Draws the noise (and the noise of stochastic samplers); one per image to make each reproducible alone.
            num_inference_steps (`int`, *optional*, defaults to 1000):
                The sampler's number of steps for a full generation; `strength` of them are run.
            eta (`float`, *optional*, defaults to 0.0):
                The DDIM eta, for samplers that take it.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` or `"pt"`, as in `__call__`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubPipelineOutput`] instead of a plain tuple.

        Example:

        ```py
        >>> import PIL.Image
        >>> import torch
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm").set_sampler("ddim")
        >>> sketch = PIL.Image.open("sketch.png")
        >>> generator = torch.Generator().manual_seed(0)
        >>> images = pipe.img2img(sketch, strength=0.6, num_inference_steps=50, generator=generator).images
        ```

        Returns:
            [`DDPMHubPipelineOutput`] or `tuple`: the edited images.
        """
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise ValueError(f"`strength` must be a number in [0, 1], got {strength!r}.")
        clean = self._prepare_images(image)
        batch_size = clean.shape[0]
        self.check_inputs(batch_size, num_inference_steps, output_type, None, generator, 1)
        # SDEdit runs the last `strength` fraction of the steps (diffusers' img2img `get_timesteps`).
        num_denoising_steps = int(num_inference_steps * strength)
        if strength > 0 and num_denoising_steps == 0:
            raise ValueError(
                f"`strength` {strength} of {num_inference_steps} steps runs no step; "
                "raise `strength` or `num_inference_steps`."
            )
        device = self._execution_device
        clean = clean.to(device)
        if num_denoising_steps == 0:
            return self._editing_output(self.postprocess(clean, output_type), return_dict)

        # 1. Set the timesteps, and start at the first one that SDEdit runs.
        noise = randn_tensor(clean.shape, generator=generator, device=device, dtype=torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        t_start = (num_inference_steps - num_denoising_steps) * self.scheduler.order
        timesteps = self.scheduler.timesteps[t_start:]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start)

        # 2. Noise the images to that step, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4, or
        # the sampler's sigma-space equivalent). Strength 1 starts from pure noise, like `__call__`.
        if num_denoising_steps == num_inference_steps:
            latents = noise * self.scheduler.init_noise_sigma
        else:
            latents = self.scheduler.add_noise(clean, noise, timesteps[:1].repeat(batch_size))

        # 3. Denoise from there with the sampler's own loop.
        latents = self._denoise(latents, timesteps, self._step_kwargs(generator, eta))[0]
        return self._editing_output(self.postprocess(latents, output_type), return_dict)

    @torch.no_grad()
    def inpaint(
        self,
        image,
        mask_image,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 250,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        eta: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> DDPMHubPipelineOutput | tuple:
        r"""
        Fill the white region of `mask_image` consistently with the rest of the image (RePaint, Lugmayr et al. 2022).

        At every step the kept region is the input noised to the current level and the filled region is the model's
        reverse step (Algorithm 1); resampling jumps (Sec. 4.2) go back up `jump_length` levels and down again
        `jump_n_sample - 1` times, so that the fill can agree with the kept region. The model is used as trained
        (noise, v or x_0 prediction, any noise schedule); the kept region of the result is the input, exactly.
        RePaint needs its own reverse steps, so the pipeline's sampler is not used; `eta` picks the step.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The images to complete; arrays and tensors in [0, 1]; resized to the model's sample size.
            mask_image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                Single-channel masks of the same size as `image`: **white (1) = fill, black (0) = keep**, as in Stable
                Diffusion inpainting (diffusers' `RePaintPipeline` uses the opposite). One for all images or one each.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Draws all the noise; one per image to make each reproducible alone.
            num_inference_steps (`int`, *optional*, defaults to 250):
                The number of noise levels, spaced as the model's scheduler spaces them (the paper uses 250).
            jump_length (`int`, *optional*, defaults to 10):
                The number of levels of each resampling jump ("j" in the paper).
            jump_n_sample (`int`, *optional*, defaults to 10):
                How many times each stretch is denoised ("r" in the paper); 1 disables resampling. The model is called
                about `num_inference_steps * jump_n_sample` times.
            eta (`float`, *optional*, defaults to 1.0):
                The reverse step of the filled region: 1 samples the DDPM posterior, as in the paper; 0 is the
                deterministic DDIM step (DDIM eq. 12), as diffusers' `RePaintScheduler` defaults to.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` or `"pt"`, as in `__call__`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubPipelineOutput`] instead of a plain tuple.

        Example:

        ```py
        >>> import PIL.Image
        >>> import torch
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm")
        >>> image, mask = PIL.Image.open("cat.png"), PIL.Image.open("hole.png")  # white where to paint
        >>> images = pipe.inpaint(image, mask, generator=torch.Generator().manual_seed(0)).images
        ```

        Returns:
            [`DDPMHubPipelineOutput`] or `tuple`: the completed images.
        """
        clean = self._prepare_images(image)
        batch_size = clean.shape[0]
        fill = self._prepare_mask(mask_image, image, batch_size)
        self.check_inputs(batch_size, num_inference_steps, output_type, None, generator, 1)
        for name, value in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"`eta` must be a number in [0, 1], got {eta!r}.")
        device = self._execution_device
        clean, fill = clean.to(device), fill.to(device)
        keep = 1 - fill

        # Noise level k = 1..N is the training timestep timesteps[k - 1] (the scheduler's own spacing); level 0 is
        # the clean image, alpha_bar = 1.
        levels = DDPMScheduler.from_config(self.scheduler.config)
        levels.set_timesteps(num_inference_steps)
        timesteps = levels.timesteps.flip(0).tolist()
        alphas_cumprod = torch.cat([torch.ones(1), levels.alphas_cumprod[timesteps].float()]).to(device)
        prediction_type = self.scheduler.config.prediction_type
        config = self.scheduler.config
        clip_range = config.get("clip_sample_range", 1.0) if config.get("clip_sample") else None

        def noise_like() -> torch.Tensor:
            return randn_tensor(clean.shape, generator=generator, device=device, dtype=torch.float32)

        # Algorithm 1, line 1: x_T ~ N(0, I).
        latents, level = noise_like(), num_inference_steps
        for next_level in self.progress_bar(repaint_levels(num_inference_steps, jump_length, jump_n_sample)):
            alpha_prod_t, alpha_prod_next = alphas_cumprod[level], alphas_cumprod[next_level]
            if next_level > level:
                # Resampling jump (line 10): x_t -> x_t+j by the forward process, q(x_t+j | x_t) in one draw.
                alpha_ratio = alpha_prod_next / alpha_prod_t
                latents = alpha_ratio.sqrt() * latents + (1 - alpha_ratio).sqrt() * noise_like()
            else:
                # 1. Predict x_0 and the noise from x_t.
                model_output = self._model_output(latents, timesteps[level - 1])
                pred_original, pred_epsilon = split_prediction(model_output, latents, alpha_prod_t, prediction_type)
                if clip_range is not None:
                    pred_original = pred_original.clamp(-clip_range, clip_range)
                    pred_epsilon = (latents - alpha_prod_t.sqrt() * pred_original) / (1 - alpha_prod_t).sqrt()
                # 2. Unknown region (line 7): the reverse step x_t -> x_t-1, DDIM eq. 12; eta = 1 is the DDPM posterior.
                variance = (1 - alpha_prod_next) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_next)
                std_dev_t = eta * variance.sqrt()
                direction = (1 - alpha_prod_next - std_dev_t**2).clamp(min=0).sqrt() * pred_epsilon
                unknown = alpha_prod_next.sqrt() * pred_original + direction + std_dev_t * noise_like()
                # 3. Known region (line 5): the input noised to the same level, x_t-1 = sqrt(alpha_bar) x_0 + ... eps.
                known = alpha_prod_next.sqrt() * clean + (1 - alpha_prod_next).sqrt() * noise_like()
                # 4. Join them (line 8).
                latents = keep * known + fill * unknown
            level = next_level
        return self._editing_output(self.postprocess(latents, output_type), return_dict)

    @torch.no_grad()
    def invert(
        self,
        image,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> DDPMHubInversionOutput | tuple:
        r"""
        Deterministic DDIM inversion: the starting noise x_T from which DDIM (eta 0) generates `image`.

        Runs the DDIM update (Song et al. 2021, eq. 13, an Euler step of the probability-flow ODE) backwards, from the
        clean image up to the first timestep of DDIM sampling with the same number of steps, as diffusers'
        `DDIMInverseScheduler` does, for eps, v and x_0 models. Each step evaluates the model at the sample it starts
        from, an error that halves as the steps double: for a smooth model, 50 steps give the image back within a
        few percent of the pixel range when the latents are sampled with DDIM.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The images to invert; arrays and tensors in [0, 1]; resized to the model's sample size.
            num_inference_steps (`int`, *optional*, defaults to 50):
                The number of DDIM steps; decode with the same number.
            output_type (`str`, *optional*, defaults to `"pil"`):
                The format of `images`, a view of the latents (`"pil"`, `"np"` or `"pt"`).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubInversionOutput`] instead of a plain tuple `(latents, images)`.

        Example:

        ```py
        >>> import PIL.Image
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm")
        >>> latents = pipe.invert(PIL.Image.open("cat.png"), num_inference_steps=50).latents
        >>> # Decode with deterministic DDIM on the same steps, without x_0 clipping (as the inversion ran):
        >>> pipe.set_sampler("ddim", clip_sample=False)
        >>> again = pipe(latents=latents, num_inference_steps=50, eta=0.0).images[0]
        ```

        Returns:
            [`DDPMHubInversionOutput`] or `tuple`: the latents x_T (float32, on the pipeline's device) and their view.
        """
        clean = self._prepare_images(image)
        self.check_inputs(clean.shape[0], num_inference_steps, output_type, None, None, 1)
        device = self._execution_device
        # The timesteps of the DDIM sampling this inverts, from its clean end (alpha_bar = 1 by default) upwards.
        ddim = self._deterministic_ddim()
        ddim.set_timesteps(num_inference_steps, device=device)
        alphas_cumprod = ddim.alphas_cumprod.to(device)
        alpha_prod_prev = ddim.final_alpha_cumprod.to(device)
        prediction_type = self.scheduler.config.prediction_type
        latents = clean.to(device)
        for t in self.progress_bar(ddim.timesteps.flip(0)):
            alpha_prod_t = alphas_cumprod[t]
            # 1. The model sees x_t-1 as if it were x_t: the one approximation of DDIM inversion, exact as the steps
            # shrink. Its output is read at t, where the model thinks it is, for eps, v and x_0 models alike.
            model_output = self._model_output(latents, t)
            pred_epsilon = split_prediction(model_output, latents, alpha_prod_t, prediction_type)[1]
            # 2. DDIM eq. 13 backwards, x_t-1 -> x_t: the x_0 that x_t-1 and eps imply, noised to t with the same eps.
            pred_original = (latents - (1 - alpha_prod_prev).sqrt() * pred_epsilon) / alpha_prod_prev.sqrt()
            latents = alpha_prod_t.sqrt() * pred_original + (1 - alpha_prod_t).sqrt() * pred_epsilon
            alpha_prod_prev = alpha_prod_t
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return latents, images
        return DDPMHubInversionOutput(latents=latents, images=images)

    def _end_noise(self, image, seed: int | None, name: str, num_inference_steps: int) -> torch.Tensor:
        """The starting noise of one end of an interpolation: inverted from an image, or drawn from a seed."""
        if (image is None) == (seed is None):
            raise ValueError(f"Give exactly one of `image_{name}` and `seed_{name}`.")
        if image is None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"`seed_{name}` must be an integer, got {seed!r}.")
            # The same noise as `__call__` with `generator=torch.Generator().manual_seed(seed)`.
            generator = torch.Generator().manual_seed(seed)
            shape = (1, *self.sample_shape)
            return randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        batched = isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 4 and len(image) != 1
        if isinstance(image, (list, tuple)) or batched:
            raise ValueError(f"`image_{name}` must be one image, got a batch.")
        return self.invert(image, num_inference_steps=num_inference_steps, output_type="pt").latents

    @torch.no_grad()
    def interpolate(
        self,
        image_a=None,
        image_b=None,
        num_frames: int = 8,
        seed_a: int | None = None,
        seed_b: int | None = None,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> DDPMHubPipelineOutput | tuple:
        r"""
        Frames that morph from one image (or seed) to another: slerp between their starting noises, decoded with
        deterministic DDIM (Song et al. 2021, Sec. 5.3 and Fig. 6).

        Each end is an image, inverted with [`~DDPMHubPipeline.invert`], or a seed, whose noise is the one `__call__`
        draws from `torch.Generator().manual_seed(seed)`. The first and last frames are then the images themselves
        (up to the inversion error) or the DDIM samples of the seeds.

        Args:
            image_a, image_b (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`, *optional*):
                The two end images; arrays and tensors in [0, 1]. Give an image or a seed for each end.
            num_frames (`int`, *optional*, defaults to 8):
                The number of frames, both ends included (at least 2).
            seed_a, seed_b (`int`, *optional*):
                Seeds for ends without an image.
            num_inference_steps (`int`, *optional*, defaults to 50):
                The number of DDIM steps, for the inversion and for decoding.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` or `"pt"`, as in `__call__`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubPipelineOutput`] instead of a plain tuple.

        Example:

        ```py
        >>> import PIL.Image
        >>> from diffusers.utils import make_image_grid
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm")
        >>> frames = pipe.interpolate(PIL.Image.open("cat.png"), PIL.Image.open("tiger.png"), num_frames=8).images
        >>> make_image_grid(frames, rows=1, cols=8).save("cat-to-tiger.png")
        >>> frames = pipe.interpolate(seed_a=0, seed_b=1, num_frames=8).images  # between two samples
        ```

        Returns:
            [`DDPMHubPipelineOutput`] or `tuple`: the `num_frames` frames, from a to b.
        """
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
            raise ValueError(f"`num_frames` must be an integer >= 2, got {num_frames!r}.")
        self.check_inputs(num_frames, num_inference_steps, output_type, None, None, 1)
        noise_a = self._end_noise(image_a, seed_a, "a", num_inference_steps)
        noise_b = self._end_noise(image_b, seed_b, "b", num_inference_steps)
        weights = torch.linspace(0, 1, num_frames).tolist()
        latents = torch.cat([slerp(noise_a, noise_b, weight) for weight in weights])
        with self._using_scheduler(self._deterministic_ddim()):
            return self(
                batch_size=num_frames,
                latents=latents,
                num_inference_steps=num_inference_steps,
                eta=0.0,
                output_type=output_type,
                return_dict=return_dict,
            )

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """Save like any diffusers pipeline, in a layout that loads with or without ddpm-hub installed.

        `model_index.json` names the stock `DDPMPipeline`, so `DiffusionPipeline.from_pretrained` works anywhere
        with no `trust_remote_code`; this file is stored beside it as `pipeline.py` for diffusers' custom-pipeline
        mechanism; `DDPMHubPipeline.from_pretrained` returns this class directly.
        """
        push_to_hub = kwargs.pop("push_to_hub", False)
        if not safe_serialization:
            raise ValueError("DDPMHubPipeline saves safetensors weights only.")
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
        index["_class_name"] = "DDPMPipeline"
        with open(index_path, "w", encoding="utf-8") as handle:
            json.dump(index, handle, indent=2, sort_keys=True)
            handle.write("\n")
        shutil.copyfile(inspect.getfile(DDPMHubPipeline), os.path.join(save_directory, "pipeline.py"))
        if push_to_hub:
            from huggingface_hub import create_repo, upload_folder

            repo_id = kwargs.get("repo_id") or os.path.basename(os.path.abspath(save_directory))
            token = kwargs.get("token")
            repo_id = create_repo(repo_id, private=kwargs.get("private"), token=token, exist_ok=True).repo_id
            upload_folder(
                repo_id=repo_id,
                folder_path=save_directory,
                commit_message=kwargs.get("commit_message", "Upload DDPMHubPipeline"),
                token=token,
            )
