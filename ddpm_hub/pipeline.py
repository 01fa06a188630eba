# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""Image generation with a DDPM-trained `UNet2DModel` (pixels or VAE latents; unconditional or class-conditional).

This file and its siblings, `pipeline_steps.py` (samplers, compile helpers, device steps), `pipeline_editing.py`
(img2img, inpaint, invert, interpolate), `pipeline_parameterization.py` (epsilon, v and x_0 predictions),
`pipeline_guidance.py` (classifier guidance), `pipeline_variance.py` (learned variances) and `pipeline_superres.py`
(`upscale`, the low-resolution input of a super-resolution model), stand alone: torch, numpy, PIL and diffusers
only, and each other through direct relative imports. `save_pretrained` copies them all (`PIPELINE_SOURCE_FILES`)
beside the weights, so the full class loads from a folder or a Hub repo without ddpm-hub, with
`DiffusionPipeline.from_pretrained(repo, custom_pipeline=repo, trust_remote_code=True)`: diffusers fetches the
relative imports of `pipeline.py` from the folder and, recursively, from a Hub repo.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import is_compiled_module, randn_tensor

from .pipeline_editing import DDPMHubEditingMixin, DDPMHubInversionOutput
from .pipeline_guidance import DDPMHubGuidanceMixin, class_id
from .pipeline_parameterization import split_prediction
from .pipeline_steps import COMPILE_MODES, SAMPLERS, DeviceSteps, SchedulerSteps, compile_denoiser, scheduler_from_name
from .pipeline_superres import DDPMHubSuperResolutionMixin
from .pipeline_variance import LEARNED_VARIANCE_TYPES, guide, split_variance

__all__ = [
    "COMPILE_MODES",
    "SAMPLERS",
    "DDPMHubInversionOutput",
    "DDPMHubPipeline",
    "DDPMHubPipelineOutput",
    "scheduler_from_name",
]

# The source files of the pipeline, copied beside the weights by `save_pretrained` and pushed with them; `pipeline.py`
# imports the others directly, which is what diffusers' custom-pipeline loader follows.
PIPELINE_SOURCE_FILES = (
    "pipeline.py", "pipeline_steps.py", "pipeline_editing.py", "pipeline_parameterization.py", "pipeline_guidance.py",
    "pipeline_variance.py", "pipeline_superres.py",
)  # fmt: skip

# "latent" returns the model's own samples: VAE latents (scaled) for a latent model, [-1, 1] pixels otherwise.
OUTPUT_TYPES = ("pil", "np", "pt", "latent")

# Steps of `__call__` when neither the call nor the pipeline (`default_num_inference_steps`) says: DDPM's own count.
DEFAULT_NUM_INFERENCE_STEPS = 1000

# Classifier-free guidance scale used when a class-conditional model is called without `guidance_scale`. 1 is the
# plain conditional model; Ho & Salimans (2022, Table 1) trade diversity (FID) for class fidelity (IS) as it grows,
# and small class-conditional DDPMs give clearly class-typical samples around 2 to 4 (diffusers' DiT uses 4).
DEFAULT_GUIDANCE_SCALE = 3.0

# `model_index.json` of a class-conditional, latent or super-resolution model: the class in `pipeline.py` beside the
# weights. Stock diffusers' DDPMPipeline can pass neither class labels, nor decode latents, nor take a low-resolution
# image, so such a model asks for `trust_remote_code=True` instead of loading as one.
CONDITIONAL_CLASS_NAME = ["pipeline", "DDPMHubPipeline"]


@dataclass
class DDPMHubPipelineOutput(ImagePipelineOutput):
    """Output of [`DDPMHubPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The generated images, in the format given by `output_type`.
        trajectory (`list`, *optional*):
            With `return_trajectory=True`: the noisy sample x_t fed to the model at every `trajectory_stride`-th
            step (in the variance-preserving scale, whatever the scheduler; decoded by the VAE of a latent model
            unless `output_type="latent"`), each in the format of `images`.
        pred_original_trajectory (`list`, *optional*):
            The model's prediction of the clean image x_0 at the same steps as `trajectory`.
        trajectory_timesteps (`list[int]`, *optional*):
            The timestep t of each entry of `trajectory`.
    """

    trajectory: list | None = None
    pred_original_trajectory: list | None = None
    trajectory_timesteps: list[int] | None = None


def labels_in_id_order(label_names: dict[str, str]) -> list[str]:
    """The class names of a `model_index.json`'s `label_names` ({id: name}, ids as strings), in id order."""
    return [label_names[key] for key in sorted(label_names, key=int)]


def _label_index(label_names: list[str] | dict[str, str], unet: UNet2DModel) -> dict[str, str]:
    """`label_names` checked against the UNet's classes, as {id: name} (diffusers reads lists as components)."""
    num_class_embeds = unet.config.get("num_class_embeds")
    if isinstance(label_names, dict):
        label_names = labels_in_id_order(label_names)
    label_names = [str(name) for name in label_names]
    if num_class_embeds is None:
        raise ValueError(f"`label_names` were given for an unconditional UNet (no `num_class_embeds`): {label_names}.")
    if len(label_names) != num_class_embeds - 1:
        raise ValueError(
            f"Got {len(label_names)} `label_names` for a UNet with {num_class_embeds - 1} classes "
            f"(num_class_embeds {num_class_embeds}, the last being the null class)."
        )
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"`label_names` must be distinct, got {label_names}.")
    return {str(i): name for i, name in enumerate(label_names)}


def _latent_scaling_factor(vae, unet: UNet2DModel, override: float | None) -> float:
    """The factor latents are multiplied by after encoding: `override`, else the VAE's own `scaling_factor`."""
    if not (callable(getattr(vae, "encode", None)) and callable(getattr(vae, "decode", None))):
        raise ValueError(f"`vae` must be an AutoencoderKL or a VQModel, got {type(vae).__name__}.")
    latent_channels = vae.config.get("vq_embed_dim") or vae.config.get("latent_channels")
    if unet.config.in_channels != latent_channels:
        raise ValueError(
            f"The UNet takes {unet.config.in_channels} channels but the VAE's latents have {latent_channels}; "
            "a latent model's UNet must have `in_channels` equal to the VAE's latent channels."
        )
    factor = vae.config.get("scaling_factor", 1.0) if override is None else override
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"`latent_scaling_factor` must be a finite number > 0, got {factor!r}.")
    return float(factor)


class DDPMHubPipeline(DDPMHubEditingMixin, DDPMHubGuidanceMixin, DDPMHubSuperResolutionMixin, DiffusionPipeline):
    r"""
    Pipeline for image generation from a DDPM-trained `UNet2DModel`, unconditional or class-conditional, in pixels
    or in the latent space of a VAE.

    Works with any diffusers scheduler built from the training scheduler's config (DDPM, DDIM, PNDM, Euler,
    Euler ancestral, Heun, LMS, DPM-Solver++, UniPC, DEIS); pick one by name with [`~DDPMHubPipeline.set_sampler`].
    Beyond [`~diffusers.DDPMPipeline`] it takes `latents` and `eta`, calls `callback_on_step_end`, can return the
    denoising trajectory, and noises images forward with [`~DDPMHubPipeline.q_sample`]. DDPM, DDIM, DPM-Solver++ and
    Euler step on the device without host syncs (`DeviceSteps`); [`~DDPMHubPipeline.compile`] adds CUDA graphs.

    A class-conditional UNet (`num_class_embeds` = number of classes + 1; the last id is the "null" class that
    classifier-free guidance uses) takes `class_labels`, by id or by name, and `guidance_scale`. Any model, conditional
    or not, is also steered by a noise-aware classifier (`classifier`, `classifier_scale`; Dhariwal & Nichol 2021).

    The same model edits images: [`~DDPMHubPipeline.img2img`] (SDEdit), [`~DDPMHubPipeline.inpaint`] (RePaint),
    [`~DDPMHubPipeline.invert`] (DDIM inversion) and [`~DDPMHubPipeline.interpolate`].

    A super-resolution model (SR3, Saharia et al. 2021; a stage of a cascade, Ho et al. 2021) has a `low_resolution`:
    its UNet takes x_t and the bicubically upsampled, noise-augmented low-resolution image as input channels, and the
    augmentation level through its class embedding; it samples with [`~DDPMHubPipeline.upscale`], not `__call__`.

    A latent model (latent diffusion, Rombach et al. 2022) has a `vae`: the UNet denoises the VAE's latents, which
    are the encoder's output (the posterior mean of an `AutoencoderKL`, the unquantized latents of a `VQModel`)
    times `latent_scaling_factor`; every call decodes its results (`output_type="latent"` returns the latents) and
    every editing method encodes its images. The saved folder holds `vae/`. It loads with
    `DDPMHubPipeline.from_pretrained(folder)` and, without ddpm-hub, with
    `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`. diffusers' own `LDMPipeline` does not load
    it as itself: `LDMPipeline.from_pretrained(folder)` follows `model_index.json` to `pipeline.py` (and asks for
    `trust_remote_code`). Built from the folder's parts, `LDMPipeline(vqvae=AutoencoderKL.from_pretrained(folder,
    subfolder="vae"), unet=UNet2DModel.from_pretrained(folder, subfolder="unet"), scheduler=...)` samples the same
    images as this class (to float rounding; the tests check it) as long as `latent_scaling_factor` is the VAE's own
    `scaling_factor`: it divides by `vqvae.config.scaling_factor`, so with an overridden factor its images are wrong.

    Parameters:
        unet ([`UNet2DModel`]):
            The denoiser, predicting noise (epsilon), v or the clean sample as its scheduler config says.
        scheduler ([`SchedulerMixin`]):
            The scheduler used to denoise; its config holds the training noise schedule.
        label_names (`list[str]` or `dict[str, str]`, *optional*):
            The names of the classes of a class-conditional UNet, in id order (or as {id: name}). Saved in
            `model_index.json` as {id: name}, since diffusers reads every list there as a component.
        vae ([`AutoencoderKL`] or [`VQModel`], *optional*):
            The autoencoder of a latent model; `None` (the default) for a pixel model.
        latent_scaling_factor (`float`, *optional*):
            With a `vae`: the factor latents are scaled by (default: `vae.config.scaling_factor`); saved in
            `model_index.json`, so an override survives saving and loading.
        default_num_inference_steps (`int`, *optional*):
            The number of steps `__call__` (and `img2img`) take when not told (e.g. a distilled student's 4); saved in
            `model_index.json`. Without it, 1000.
        low_resolution (`int`, *optional*):
            A super-resolution model's input size: it upscales `low_resolution` x `low_resolution` images to the UNet's
            sample size (which it must divide). Its UNet has `in_channels` = 2 x the image channels and
            `class_embed_type="timestep"`.
        low_res_noise_max (`int`, *optional*, defaults to 0 with `low_resolution`):
            The highest conditioning-augmentation level the upscaler was trained with.
        low_res_upsampling (`str`, *optional*, defaults to `"bicubic"` with `low_resolution`):
            How the low-resolution image is brought to the output size before the UNet sees it.
    """

    model_cpu_offload_seq = "unet->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents"]
    # Step DDPM, DDIM, DPM-Solver++ and Euler with `DeviceSteps` (no host syncs); False steps every sampler with
    # the scheduler's own `step`, the reference those steps are tested against.
    device_steps: bool = True
    _cuda_graphs = False  # set by `compile`

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        label_names: list[str] | dict[str, str] | None = None,
        vae=None,
        latent_scaling_factor: float | None = None,
        default_num_inference_steps: int | None = None,
        low_resolution: int | None = None,
        low_res_noise_max: int | None = None,
        low_res_upsampling: str | None = None,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae)
        self._init_super_resolution(unet, low_resolution, low_res_noise_max, low_res_upsampling)
        # Only pipelines that have them carry these keys, so a pixel model keeps the plain DDPMPipeline index.
        if label_names is not None:
            self.register_to_config(label_names=_label_index(label_names, unet))
        if vae is not None:
            self.register_to_config(latent_scaling_factor=_latent_scaling_factor(vae, unet, latent_scaling_factor))
        elif latent_scaling_factor is not None:
            raise ValueError("`latent_scaling_factor` applies to a latent model; this pipeline has no `vae`.")
        if default_num_inference_steps is not None:
            steps = default_num_inference_steps
            if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
                raise ValueError(f"`default_num_inference_steps` must be a positive integer, got {steps!r}.")
            self.register_to_config(default_num_inference_steps=int(steps))
        self._check_variance(scheduler)
        grayscale = self.image_shape[0] == 1
        # Converts the inputs of q_sample and the editing methods, and the outputs of every call, in pixels.
        self.image_processor = VaeImageProcessor(
            vae_scale_factor=self.vae_scale_factor,
            do_convert_rgb=not grayscale,
            do_convert_grayscale=grayscale,
            do_resize=True,
        )

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the samples the UNet denoises: the images, or a latent model's latents."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return self.unet.config.in_channels - self.low_res_channels, height, width

    @property
    def learns_variance(self) -> bool:
        """Whether the UNet also outputs the variance of each reverse step (Improved DDPM's `learned_range`: twice the
        sample's channels); the `ddpm` sampler then steps with it, every other sampler uses the first half only."""
        return self.unet.config.out_channels == 2 * self.sample_shape[0]

    def _check_variance(self, scheduler: SchedulerMixin) -> None:
        """A scheduler that steps a learned variance needs a UNet that outputs one."""
        variance_type = scheduler.config.get("variance_type")
        learned = isinstance(scheduler, DDPMScheduler) and variance_type in LEARNED_VARIANCE_TYPES
        if learned and not self.learns_variance:
            raise ValueError(
                f"The scheduler's variance_type {variance_type!r} needs a UNet with twice the sample's "
                f"{self.sample_shape[0]} output channels; this one has {self.unet.config.out_channels}."
            )

    @property
    def vae_scale_factor(self) -> int:
        """How many pixels one latent cell spans per side (2 per VAE downsampling block); 1 for a pixel model."""
        vae = getattr(self, "vae", None)
        return 1 if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images this pipeline generates and edits."""
        channels, height, width = self.sample_shape
        vae = getattr(self, "vae", None)
        if vae is not None:
            channels = vae.config.get("out_channels", 3)
        return channels, height * self.vae_scale_factor, width * self.vae_scale_factor

    @property
    def latent_scaling_factor(self) -> float | None:
        """The factor a latent model's VAE latents are scaled by; `None` for a pixel model."""
        return self.config.get("latent_scaling_factor") if getattr(self, "vae", None) is not None else None

    @property
    def default_num_inference_steps(self) -> int:
        """The steps `__call__` takes without `num_inference_steps`: the saved default, else 1000."""
        return self.config.get("default_num_inference_steps") or DEFAULT_NUM_INFERENCE_STEPS

    def resolve_num_inference_steps(self, num_inference_steps: int | None) -> int:
        return self.default_num_inference_steps if num_inference_steps is None else num_inference_steps

    @property
    def num_classes(self) -> int:
        """The number of classes of a class-conditional model (the null class not counted); 0 if unconditional."""
        num_class_embeds = self.unet.config.get("num_class_embeds")
        return 0 if num_class_embeds is None else num_class_embeds - 1

    @property
    def label_names(self) -> list[str] | None:
        """The class names, in id order, of a conditional model saved with them; else `None`."""
        names = self.config.get("label_names")
        return labels_in_id_order(names) if names is not None else None

    @property
    def null_class_id(self) -> int:
        """The class id the model was trained with in place of a dropped label: the unconditional model."""
        return self.num_classes

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] as the model's clean samples: scaled VAE latents for a latent model, else themselves.

        An `AutoencoderKL` gives its posterior mean (deterministic: editing draws no noise for it), a `VQModel` its
        latents before quantization (the space LDM's VQ models diffuse in); then (z - shift) * scaling factor.
        """
        if self.vae is None:
            return images.float()
        vae = self.vae
        encoded = vae.encode(images.to(device=vae.device, dtype=vae.dtype))
        latents = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
        shift = vae.config.get("shift_factor") or 0.0
        return ((latents.float() - shift) * self.latent_scaling_factor).to(images.device)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The images in about [-1, 1] that samples of the model stand for: a latent model's VAE decodes them."""
        if self.vae is None:
            return latents.float()
        vae = self.vae
        shift = vae.config.get("shift_factor") or 0.0
        latents = latents.float() / self.latent_scaling_factor + shift
        # A VQModel quantizes here, as diffusers' LDMPipeline decodes.
        images = vae.decode(latents.to(device=vae.device, dtype=vae.dtype)).sample
        return images.float().to(latents.device)

    def set_sampler(self, name: str, **overrides) -> DDPMHubPipeline:
        """Swap in the scheduler called `name` (see `SAMPLERS`), keeping the model's training schedule.

        Example:

        ```py
        >>> pipe.set_sampler("dpmpp_2m")
        >>> images = pipe(num_inference_steps=20).images
        ```

        On a model with learned variances, `"ddpm"` steps with them (`variance_type="learned_range"` unless `overrides`
        say otherwise, e.g. `set_sampler("ddpm", variance_type="fixed_small")`); the other samplers use the mean only.
        """
        if name == "ddpm" and self.learns_variance:
            overrides.setdefault("variance_type", "learned_range")
        scheduler = scheduler_from_name(name, self.scheduler.config, **overrides)
        self._check_variance(scheduler)
        self.scheduler = scheduler
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

    def prepare_class_labels(
        self,
        class_labels: int | str | Sequence[int | str] | torch.Tensor | None,
        batch_size: int,
        guidance_scale: float | None,
        device: torch.device | None = None,
    ) -> tuple[torch.Tensor | None, float]:
        """Class ids for `batch_size` images and the guidance scale to use, checked against this model.

        Labels are ids or names: one for every image, or a list (or tensor) with one per image. `None` on a
        conditional model samples the unconditional model (the null class), without guidance. Returns `(None, 1.0)`
        for an unconditional model. Raises `ValueError` with one sentence for anything this model cannot take.
        """
        if guidance_scale is not None and (
            isinstance(guidance_scale, bool)
            or not isinstance(guidance_scale, (int, float, np.integer, np.floating))
            or not math.isfinite(guidance_scale)
            or guidance_scale < 0
        ):
            raise ValueError(f"`guidance_scale` must be a finite number >= 0, got {guidance_scale!r}.")
        if self.num_classes == 0:
            if class_labels is not None:
                raise ValueError(
                    f"This model is unconditional (its UNet has no class embedding), so it takes no `class_labels`; "
                    f"got {class_labels!r}."
                )
            if guidance_scale is not None:
                raise ValueError(
                    f"`guidance_scale` ({guidance_scale}) needs a class-conditional model; this one is unconditional."
                )
            return None, 1.0
        if class_labels is None:
            ids = [self.null_class_id] * batch_size
            guidance_scale = 1.0  # the null class is the unconditional model itself
        else:
            if isinstance(class_labels, torch.Tensor):
                class_labels = class_labels.reshape(-1).tolist()
            labels = list(class_labels) if isinstance(class_labels, (list, tuple)) else [class_labels]
            if len(labels) == 1:
                labels = labels * batch_size
            if len(labels) != batch_size:
                raise ValueError(
                    f"Got {len(labels)} `class_labels` for a batch of {batch_size}; pass one, or one per image."
                )
            ids = [self._class_id(label) for label in labels]
            guidance_scale = DEFAULT_GUIDANCE_SCALE if guidance_scale is None else float(guidance_scale)
        return torch.tensor(ids, dtype=torch.long, device=device), guidance_scale

    def _class_id(self, label) -> int:
        return class_id(label, self.label_names, self.num_classes)

    def compile(
        self, mode: str | None = None, *, backend: str = "inductor", fullgraph: bool = False
    ) -> DDPMHubPipeline:
        """Compile the UNet with `torch.compile` for the batch shape in use; call after moving the pipeline.

        On CUDA the default mode, "reduce-overhead", captures each compiled UNet call in a CUDA graph; with the
        denoising steps of DDPM, DDIM, DPM-Solver++ and Euler kept on the device, a sampling run then hardly waits on
        Python. The first call of each batch size compiles (tens of seconds); the images match the eager pipeline's to
        floating-point rounding.

        Args:
            mode (`str`, *optional*):
                One of `COMPILE_MODES`; defaults to "reduce-overhead" on CUDA and torch's default elsewhere.
            backend (`str`, *optional*, defaults to `"inductor"`):
                The `torch.compile` backend ("aot_eager" traces without generating code, for quick checks).
            fullgraph (`bool`, *optional*, defaults to `False`):
                Fail instead of falling back to Python where the UNet cannot be captured whole.

        Example:

        ```py
        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm").to("cuda").set_sampler("dpmpp_2m").compile()
        >>> images = pipe(batch_size=64, num_inference_steps=20).images  # the first call compiles
        ```
        """
        mode = compile_denoiser(self.unet, mode, backend=backend, fullgraph=fullgraph)
        self._cuda_graphs = mode in ("reduce-overhead", "max-autotune")
        return self

    def _model_output(
        self,
        model_input: torch.Tensor,
        t,
        class_labels: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        *,
        with_variance: bool = False,
    ) -> torch.Tensor:
        """The UNet's prediction (noise, v or x_0) at step t in float32, with classifier-free guidance for labels.

        This is the one place where the UNet is called. Guidance (Ho & Salimans 2022, eq. 6, written with diffusers'
        scale s = 1 + w): out = out_null + s (out_class - out_null), from one batched UNet call on [null; class]. It
        is applied to the model output whatever it predicts: eps, v = (eps - sigma_t x_t) / alpha_t and
        x_0 = (x_t - sigma_t eps) / alpha_t are affine in eps at a fixed x_t, and the weights (1 - s) and s sum to
        one, so guiding v or x_0 equals guiding eps and converting. s = 1 is the conditional model alone, s = 0 the
        unconditional one.

        A model with learned variances also outputs their channels after the prediction's; they are kept with
        `with_variance=True` (for the sampler that steps with them) and dropped otherwise, so that every other caller
        gets the prediction alone. Guidance extrapolates the prediction only; the variance is the conditional model's.
        """
        if class_labels is None or guidance_scale == 1:
            output = self._unet(model_input, t, class_labels)
        elif guidance_scale == 0:
            output = self._unet(model_input, t, torch.full_like(class_labels, self.null_class_id))
        else:
            null_labels = torch.full_like(class_labels, self.null_class_id)
            both = self._unet(torch.cat([model_input, model_input]), t, torch.cat([null_labels, class_labels]))
            output = guide(*both.chunk(2), guidance_scale, model_input.shape[1])
        return output if with_variance else split_variance(output, model_input.shape[1])[0]

    def _unet(self, model_input: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        compiled = getattr(self.unet, "_compiled_call_impl", None) is not None or is_compiled_module(self.unet)
        if self._cuda_graphs:
            # Each call starts a new CUDA-graph generation (the last output is dead by now), also in a process where
            # something else marks steps by hand, after which torch stops counting calls as generations.
            torch.compiler.cudagraph_mark_step_begin()
        model_input, class_labels = self._with_low_res_input(model_input, class_labels)
        kwargs = {} if class_labels is None else {"class_labels": class_labels}
        model_output = self.unet(model_input.to(self.unet.dtype), t, **kwargs).sample
        # A CUDA graph overwrites its output at the next call: keep a copy that the scheduler may hold on to.
        return model_output.to(torch.float32, copy=compiled)

    def _steps(self, generator, eta: float) -> DeviceSteps | SchedulerSteps:
        """How to take the denoising steps of the current scheduler, after `set_timesteps`."""
        steps = DeviceSteps.from_scheduler(self.scheduler, eta, generator) if self.device_steps else None
        return steps or SchedulerSteps(self.scheduler, self._step_kwargs(generator, eta))

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
        prediction = split_variance(model_output, sample.shape[1])[0]
        return split_prediction(prediction, sample, alpha_prod_t, self.scheduler.config.prediction_type)[0]

    def postprocess(self, sample: torch.Tensor, output_type: str):
        """Map samples of the model to images of `output_type` ("pil", "np", "pt" in [0, 1]; "latent": as they are).

        A latent model's samples are decoded by its VAE first; a pixel model's are images in [-1, 1].
        """
        if output_type == "latent":
            return sample
        return self.image_processor.postprocess(self.decode_latents(sample).clamp(-1, 1), output_type=output_type)

    def _denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        steps: DeviceSteps | SchedulerSteps,
        *,
        start_index: int = 0,
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
        begin index) must already be set; `steps` (from `_steps`) takes each step, at the absolute index
        `start_index + i` of the schedule. Returns the final latents and the trajectory lists.
        """
        trajectory, pred_original_trajectory, trajectory_timesteps = [], [], []
        for i, t in enumerate(self.progress_bar(timesteps)):
            # 2. Predict the model output (noise, v or x_0) from x_t.
            model_input = steps.scale_model_input(latents, start_index + i, t)
            model_output = self._model_output(
                model_input, t, class_labels, guidance_scale, with_variance=steps.takes_variance
            )

            # 3. Compute the previous sample: x_t -> x_t-1.
            prev_sample, pred_original = steps.step(model_output, start_index + i, t, latents)

            if return_trajectory and (i % trajectory_stride == 0 or i == len(timesteps) - 1):
                if pred_original is None:  # multistep solvers do not return it
                    pred_original = self._predict_original(model_output, model_input, t)
                trajectory.append(self.postprocess(model_input, output_type))
                pred_original_trajectory.append(self.postprocess(pred_original, output_type))
                trajectory_timesteps.append(int(t))

            latents = prev_sample
            if callback_on_step_end is not None:
                step_tensors = {"latents": latents}
                callback_kwargs = {name: step_tensors[name] for name in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                latents = callback_outputs.pop("latents", latents)

        return latents, trajectory, pred_original_trajectory, trajectory_timesteps

    def _callback_inputs(self, callback_on_step_end, tensor_inputs: list[str]) -> list[str]:
        """The tensors handed to `callback_on_step_end`, checked against `_callback_tensor_inputs`."""
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = callback_on_step_end.tensor_inputs
        unknown = set(tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"Unknown callback tensor inputs {sorted(unknown)}; allowed: {self._callback_tensor_inputs}."
            )
        return tensor_inputs

    def _starting_noise(self, batch_size: int, generator, latents: torch.Tensor | None, num_inference_steps: int):
        """x_T for sampling from pure noise, with the scheduler's timesteps set; returns (x_T, timesteps)."""
        device = self._execution_device
        # Noise is drawn and the sample is kept in float32 whatever the UNet's dtype: per-image seeds then give the
        # same noise in fp16/bf16, and the scheduler's updates do not accumulate half-precision error.
        if latents is None:
            latents = randn_tensor(
                (batch_size, *self.sample_shape), generator=generator, device=device, dtype=torch.float32
            )
        latents = latents.to(device=device, dtype=torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if hasattr(self.scheduler, "set_begin_index"):
            # We always start from pure noise. Without this, schedulers locate the first step by searching for its
            # timestep, which goes wrong when rounding repeats a timestep (Karras sigmas on a cosine schedule).
            self.scheduler.set_begin_index(0)
        # Sigma-space schedulers start at sigma_max, not 1.
        return latents * self.scheduler.init_noise_sigma, self.scheduler.timesteps

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: int | str | Sequence[int | str] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
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
        return_trajectory: bool = False,
        trajectory_stride: int = 1,
        classifier: torch.nn.Module | None = None,
        classifier_scale: float | None = None,
    ) -> DDPMHubPipelineOutput | tuple:
        r"""
        Generate images.

        Args:
            batch_size (`int`, *optional*, defaults to 1):
                The number of images to generate; with a list of `class_labels`, defaults to its length.
            class_labels (`int`, `str`, `list` or `torch.Tensor`, *optional*):
                For a class-conditional model: the class of every image, by id or by name (see `label_names`), or
                one per image. Without it a conditional model samples its unconditional (null-class) model.
            guidance_scale (`float`, *optional*, defaults to 3.0 with `class_labels`):
                Classifier-free guidance scale s (Ho & Salimans 2022): 1 is the conditional model alone, 0 the
                unconditional one, larger values give more class-typical, less varied images.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes generation deterministic. With one generator per image, image i depends only on `generator[i]`.
            num_inference_steps (`int`, *optional*):
                The number of denoising steps; defaults to the pipeline's `default_num_inference_steps` (1000 unless
                it was saved with another). DDPM needs about as many as it was trained with; DDIM, DPM-Solver++ and
                UniPC give good images in 20 to 50.
            eta (`float`, *optional*, defaults to 0.0):
                The DDIM eta (η in the DDIM paper, eq. 16): 0 is deterministic DDIM, 1 is DDPM-like.
            latents (`torch.Tensor`, *optional*):
                Starting noise of shape `(batch_size, *sample_shape)` (latent-sized for a latent model) from a
                standard normal; scaled by the scheduler's `init_noise_sigma`. Drawn from `generator` if not given.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` (in [0, 1]), `"pt"` (in [0, 1]) or `"latent"` (the model's samples, undecoded).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMHubPipelineOutput`] instead of a plain tuple.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called as `callback_on_step_end(self, step, timestep, callback_kwargs)` after every step; the tensors
                it returns replace those of `callback_kwargs` (named by `callback_on_step_end_tensor_inputs`).
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*, defaults to `["latents"]`):
                The tensors passed to `callback_on_step_end`.
            return_trajectory (`bool`, *optional*, defaults to `False`):
                Also return the noisy samples x_t and the predicted clean images x_0 along the way (decoded).
            trajectory_stride (`int`, *optional*, defaults to 1):
                Keep every k-th step of the trajectory (the last step is always kept).
            classifier (`torch.nn.Module`, *optional*):
                A noise-aware classifier of this model's x_t (e.g. ddpm-hub's `NoiseAwareClassifier`, trained by
                `ddpm-hub train-classifier`) that steers every image towards its class in `class_labels`: classifier
                guidance (Dhariwal & Nichol 2021). On an unconditional model `class_labels` name the classifier's
                classes; on a class-conditional one both the model's and the classifier's (the same classes), and
                the two guidances combine. It must be on the pipeline's device. See `pipeline_guidance.py`.
            classifier_scale (`float`, *optional*, defaults to 1.0 with a `classifier`):
                The classifier guidance scale s >= 0, which multiplies ∇ log p(y | x_t): 0 samples without guidance,
                larger values give more class-typical, less varied images.

        Example:

        ```py
        >>> import torch
        >>> from ddpm_hub import DDPMHubPipeline

        >>> pipe = DDPMHubPipeline.from_pretrained("org/cats-ddpm").set_sampler("ddim")
        >>> generator = [torch.Generator().manual_seed(seed) for seed in range(4)]
        >>> images = pipe(batch_size=4, generator=generator, num_inference_steps=50).images

        >>> pipe = DDPMHubPipeline.from_pretrained("org/emoji-by-category")  # class-conditional
        >>> images = pipe(class_labels=["Animals & Nature", "Food & Drink"], guidance_scale=3.0).images

        >>> from ddpm_hub.classifier import NoiseAwareClassifier

        >>> pipe = DDPMHubPipeline.from_pretrained("org/emoji-ddpm").set_sampler("ddim")  # unconditional
        >>> classifier = NoiseAwareClassifier.from_pretrained("org/emoji-ddpm-classifier")
        >>> images = pipe(class_labels="Food & Drink", classifier=classifier, classifier_scale=4.0, batch_size=4).images
        ```

        Returns:
            [`DDPMHubPipelineOutput`] or `tuple`: the images (and trajectory if asked for); a tuple of the
            non-empty fields when `return_dict` is `False`.
        """
        if batch_size == 1 and isinstance(class_labels, (list, tuple, torch.Tensor)) and len(class_labels) > 1:
            batch_size = len(class_labels)
        num_inference_steps = self.resolve_num_inference_steps(num_inference_steps)
        self.check_inputs(batch_size, num_inference_steps, output_type, latents, generator, trajectory_stride)
        labels, scale, classifier_guidance = self.prepare_guidance(
            class_labels, batch_size, guidance_scale, classifier, classifier_scale, self._execution_device
        )
        tensor_inputs = self._callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)

        # 1. Set the timesteps and draw the starting noise x_T.
        latents, timesteps = self._starting_noise(batch_size, generator, latents, num_inference_steps)
        # 2.-3. Denoise, x_T -> x_0.
        latents, *trajectory = self._denoise(
            latents,
            timesteps,
            self._guided_steps(self._steps(generator, eta), classifier_guidance),
            class_labels=labels,
            guidance_scale=scale,
            output_type=output_type,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=tensor_inputs,
            return_trajectory=return_trajectory,
            trajectory_stride=trajectory_stride,
        )
        # 4. Decode (a latent model's VAE) and convert.
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        output = DDPMHubPipelineOutput(images, *trajectory) if return_trajectory else DDPMHubPipelineOutput(images)
        return output if return_dict else output.to_tuple()

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

        A latent model noises the VAE latents of the images (x_0 = the scaled posterior mean) and decodes x_t for
        `"pil"` and `"np"`: the forward process as the model sees it, shown as images.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                Clean images; arrays and tensors in [0, 1], resized to the model's image size.
            timestep (`int`, `list[int]` or `torch.Tensor`):
                The training timestep t, in [0, num_train_timesteps), one for all images or one per image.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Draws eps when `noise` is not given.
            noise (`torch.Tensor`, *optional*):
                The eps to use, of the shape of the model's samples (`(batch, *sample_shape)`).
            output_type (`str`, *optional*, defaults to `"pt"`):
                `"pt"` (or `"latent"`) returns x_t as a tensor as the model sees it ([-1, 1] pixels, or latents);
                `"pil"` and `"np"` return viewable images.
        """
        clean = self._prepare_model_input(image)
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
        noisy = forward.add_noise(clean, noise.to(clean), timesteps.to(clean.device))
        if output_type in ("pt", "latent"):
            return noisy
        return self.postprocess(noisy, output_type)

    def _editing_output(self, images, return_dict: bool):
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return DDPMHubPipelineOutput(images=images)

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike):
        # diffusers reads `model_index.json` through the class being loaded. Loaded through this class, a conditional
        # model's index names it directly, so no remote code is needed (nor run) to load it.
        config = super()._dict_from_json_file(json_file)
        if config.get("_class_name") == CONDITIONAL_CLASS_NAME:
            config["_class_name"] = cls.__name__
        return config

    # Editing: SDEdit, RePaint, DDIM inversion and interpolation on the same model and denoising loop.

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """Save like any diffusers pipeline, in a layout that loads with or without ddpm-hub installed.

        For an unconditional pixel model `model_index.json` names the stock `DDPMPipeline`, so
        `DiffusionPipeline.from_pretrained` works anywhere with no `trust_remote_code`. A class-conditional, latent or
        super-resolution model names this class in `pipeline.py` instead (`DDPMPipeline` could pass neither class
        labels, nor decode latents, nor take a low-resolution image), so stock diffusers asks for
        `trust_remote_code=True` and then loads this class. The source files (`PIPELINE_SOURCE_FILES`) are stored
        beside the weights; `DDPMHubPipeline.from_pretrained` returns this class directly, without remote code.
        """
        push_to_hub = kwargs.pop("push_to_hub", False)
        if not safe_serialization:
            raise ValueError("DDPMHubPipeline saves safetensors weights only.")
        variance_type = self.scheduler.config.get("variance_type")
        steps_variance = isinstance(self.scheduler, DDPMScheduler) and variance_type == "learned_range"
        if self.learns_variance and not steps_variance:
            # Stock DDPMPipeline steps the saved scheduler with the whole output; only this one reads the variance.
            raise ValueError(
                f"A model with learned variances is saved with its DDPMScheduler (variance_type 'learned_range'), not "
                f"{type(self.scheduler).__name__} ({variance_type!r}): call `set_sampler('ddpm')` first."
            )
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
        if self.vae is None:
            index.pop("vae", None)  # a pixel model's index stays the one stock DDPMPipeline reads
        own_class = self.num_classes or self.vae is not None or self.is_upscaler
        index["_class_name"] = CONDITIONAL_CLASS_NAME if own_class else "DDPMPipeline"
        with open(index_path, "w", encoding="utf-8") as handle:
            json.dump(index, handle, indent=2, sort_keys=True)
            handle.write("\n")
        source_dir = os.path.dirname(inspect.getfile(DDPMHubPipeline))
        for name in PIPELINE_SOURCE_FILES:
            shutil.copyfile(os.path.join(source_dir, name), os.path.join(save_directory, name))
        if push_to_hub:
            self._upload(save_directory, kwargs.get("repo_id") or os.path.basename(os.path.abspath(save_directory)),
                         token=kwargs.get("token"), private=kwargs.get("private"),
                         commit_message=kwargs.get("commit_message"))  # fmt: skip

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        **kwargs,
    ) -> str:
        """Save the pipeline to a temporary folder and upload it to the Hub repo `repo_id` (see `_upload`).

        Example:

        ```py
        >>> pipe.push_to_hub("your-name/emoji-ddpm", private=True)
        ```
        """
        if create_pr or self._publisher() is None:  # diffusers' own path (pull requests, or without ddpm-hub)
            return super().push_to_hub(repo_id, commit_message, private, token, create_pr, **kwargs)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return self._upload(folder, repo_id, token=token, private=private, commit_message=commit_message)

    # The upload of `push_to_hub` and `save_pretrained(push_to_hub=True)`: ddpm-hub's publisher, the path training's
    # `--push_to_hub` takes (retries, an atomic folder snapshot, no local paths in the card), when ddpm-hub is
    # installed; a copy of this file beside the weights on a machine without it uploads as diffusers does.
    publisher = "ddpm_hub.hub:push_folder"

    @classmethod
    def _publisher(cls):
        module, _, name = cls.publisher.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError:
            return None

    def _upload(self, folder, repo_id: str, *, token=None, private=None, commit_message=None) -> str:
        publish = self._publisher()
        message = commit_message or "Upload DDPMHubPipeline"
        if publish is not None:
            return publish(folder, repo_id, token=token, private=bool(private), commit_message=message)
        from huggingface_hub import create_repo, upload_folder

        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        return upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message, token=token)
