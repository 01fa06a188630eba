# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""Image generation with a DDPM-trained `UNet2DModel` (unconditional or class-conditional) and any diffusers scheduler.

This file stands alone (torch, numpy, PIL and diffusers only): `save_pretrained` copies it into every saved
pipeline as `pipeline.py`, so the full class can be loaded from a folder or a Hub repo by anyone, with
`DiffusionPipeline.from_pretrained(repo, custom_pipeline=repo, trust_remote_code=True)`, without ddpm-hub.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch

import diffusers
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    ImagePipelineOutput,
    UNet2DModel,
)
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import is_compiled_module, randn_tensor


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

# Classifier-free guidance scale used when a class-conditional model is called without `guidance_scale`. 1 is the
# plain conditional model; Ho & Salimans (2022, Table 1) trade diversity (FID) for class fidelity (IS) as it grows,
# and small class-conditional DDPMs give clearly class-typical samples around 2 to 4 (diffusers' DiT uses 4).
DEFAULT_GUIDANCE_SCALE = 3.0

# `model_index.json` of a class-conditional model: the class in `pipeline.py` beside the weights. Stock diffusers'
# DDPMPipeline cannot pass class labels, so such a model asks for `trust_remote_code=True` instead of loading as one.
CONDITIONAL_CLASS_NAME = ["pipeline", "DDPMHubPipeline"]

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


# torch.compile's modes. "reduce-overhead" captures the compiled UNet in CUDA graphs: one launch per step instead of
# hundreds of kernel launches, which is where the time of a small UNet goes on a fast GPU.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_options(mode: str | None, backend: str) -> None:
    """Raise `ValueError` for a compile mode or backend that torch.compile does not know."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"Unknown compile mode {mode!r}; choose one of: {', '.join(COMPILE_MODES)}.")
    backends = torch.compiler.list_backends(exclude_tags=())
    if backend not in backends:
        raise ValueError(f"Unknown compile backend {backend!r}; choose one of: {', '.join(backends)}.")
    if backend != "inductor" and mode not in (None, "default"):
        raise ValueError(f"Compile mode {mode!r} needs the inductor backend, not {backend!r}.")


def compile_denoiser(
    model: torch.nn.Module, mode: str | None = None, backend: str = "inductor", fullgraph: bool = False
) -> str | None:
    """Compile `model` in place (`nn.Module.compile`) for fixed input shapes; return the mode used.

    `mode=None` picks "reduce-overhead" (CUDA graphs) for a model on CUDA and torch's default elsewhere. Compiling in
    place keeps the model's class, parameter names and `save_pretrained`. Each new batch shape compiles once more.
    """
    check_compile_options(mode, backend)
    if mode is None:
        on_cuda = next(model.parameters()).device.type == "cuda"
        mode = "reduce-overhead" if on_cuda and backend == "inductor" else None
    # Modes are options of inductor; other backends (aot_eager, eager) take none.
    model.compile(mode=mode if backend == "inductor" else None, backend=backend, fullgraph=fullgraph, dynamic=False)
    return mode


def _draw_noise(shape, generator, device: torch.device) -> torch.Tensor:
    """`randn_tensor`'s float32 draw (the same numbers from the same generators), moved to `device` without a host sync.

    Noise from CPU generators is made on the CPU; a plain copy to a CUDA device would wait for the GPU to finish its
    queue at every step, so the copy goes through pinned memory, asynchronously.
    """
    first = generator[0] if isinstance(generator, list) else generator
    if device.type == "cuda" and first is not None and first.device.type == "cpu":
        noise = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        return noise.pin_memory().to(device, non_blocking=True)
    return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)


class SchedulerSteps:
    """Denoising steps through the scheduler's own `scale_model_input` and `step`: every sampler, the reference.

    Its schedulers read their coefficients on the host (indexing CPU tables with device timesteps, `.item()`), so on
    a GPU each step waits for the previous one to finish.
    """

    def __init__(self, scheduler: SchedulerMixin, step_kwargs: dict[str, Any]):
        self.scheduler, self.step_kwargs = scheduler, step_kwargs

    def scale_model_input(self, sample: torch.Tensor, index: int, t) -> torch.Tensor:
        return self.scheduler.scale_model_input(sample, t)

    def step(self, model_output: torch.Tensor, index: int, t, sample: torch.Tensor):
        """x_t -> x_t-1; returns (prev_sample, pred_original_sample or None where the scheduler gives none)."""
        output = self.scheduler.step(model_output, t, sample, **self.step_kwargs)
        return output.prev_sample, getattr(output, "pred_original_sample", None)


class DeviceSteps:
    r"""
    The same steps as DDPM, DDIM (any eta), DPM-Solver++ (1S/2M) and Euler, as tensor math on the sample's device.

    Every step of these samplers is linear in the sample x_t, the model output m, the clean-image prediction x_0 (which
    may be clipped) and, for multistep DPM-Solver++, the previous x_0:

        x_0 = x0_sample * x_t + x0_output * m                                   (clipped to ±clip if configured)
        x_t-1 = prev_sample * x_t + prev_output * m + prev_x0 * x_0 + noise_std * z      (first order)
        x_t-1 = prev_sample * x_t + prev_x0_multistep * x_0 + prev_x0_last * x_0'        (DPM-Solver++(2M))

    so the coefficients of all steps are computed once, after `set_timesteps`, from the scheduler's schedule, and
    kept on the device: a step then reads no value back to the host, and the GPU never waits for the CPU. Noise z is
    drawn from the generators at the same steps, in the same order and shape, as the scheduler draws it, so the
    images match the scheduler's own `step` to floating-point rounding.
    """

    COEFFICIENTS = (
        "input_scale", "x0_sample", "x0_output", "prev_sample", "prev_output", "prev_x0", "noise_std",
        "prev_x0_multistep", "prev_x0_last",
    )  # fmt: skip

    def __init__(self, rows: list[dict[str, float]], noise_at: list[bool], multistep_at: list[bool], device, *,
                 clip: float | None = None, scales_input: bool = False, uses_output: bool = False,
                 generator=None):  # fmt: skip
        table = torch.tensor([[row.get(name, 0.0) for name in self.COEFFICIENTS] for row in rows], dtype=torch.float64)
        # One (steps,) float32 tensor per coefficient; indexing it with a Python int is a view, not a sync.
        self.coefficients = dict(zip(self.COEFFICIENTS, table.float().to(device).unbind(1)))  # (MPS has no float64)
        self.noise_at, self.multistep_at = noise_at, multistep_at
        self.clip, self.scales_input, self.uses_output, self.generator = clip, scales_input, uses_output, generator
        self.previous_x0: torch.Tensor | None = None  # DPM-Solver++(2M) state: x_0 of the step before

    @classmethod
    def from_scheduler(cls, scheduler: SchedulerMixin, eta: float = 0.0, generator=None) -> "DeviceSteps | None":
        """The device steps of `scheduler` after `set_timesteps`, or None for a sampler or option they do not cover."""
        config = scheduler.config
        if config.get("thresholding") or config.prediction_type not in ("epsilon", "v_prediction", "sample"):
            return None  # dynamic thresholding needs per-image quantiles: left to the scheduler
        builders = {
            DDPMScheduler: _ddpm_coefficients,
            DDIMScheduler: _ddim_coefficients,
            DPMSolverMultistepScheduler: _dpm_solver_coefficients,
            EulerDiscreteScheduler: _euler_coefficients,
        }
        builder = builders.get(type(scheduler))
        try:
            built = builder(scheduler, eta) if builder is not None else None
        except ZeroDivisionError:  # a degenerate schedule (eps at zero terminal SNR): the scheduler's own inf/nan
            return None
        if built is None:
            return None
        rows, noise_at, multistep_at, options = built
        return cls(rows, noise_at, multistep_at, scheduler.timesteps.device, generator=generator, **options)

    def scale_model_input(self, sample: torch.Tensor, index: int, t) -> torch.Tensor:
        return sample * self.coefficients["input_scale"][index] if self.scales_input else sample

    def step(self, model_output: torch.Tensor, index: int, t, sample: torch.Tensor):
        """x_t -> x_t-1 at step `index` of the schedule; returns (prev_sample, pred_original_sample)."""
        c = {name: values[index] for name, values in self.coefficients.items()}
        pred_original = c["x0_sample"] * sample + c["x0_output"] * model_output
        if self.clip is not None:
            pred_original = pred_original.clamp(-self.clip, self.clip)
        if self.multistep_at[index] and self.previous_x0 is not None:
            # DPM-Solver++(2M), Lu et al. 2022, Algorithm 2: a second-order step from the last two x_0 predictions.
            prev_sample = c["prev_sample"] * sample + c["prev_x0_multistep"] * pred_original
            prev_sample = prev_sample + c["prev_x0_last"] * self.previous_x0
        else:
            prev_sample = c["prev_sample"] * sample + c["prev_x0"] * pred_original
            if self.uses_output:  # DDIM's "direction pointing to x_t" (eq. 12) takes eps from the model output
                prev_sample = prev_sample + c["prev_output"] * model_output
        if self.noise_at[index]:
            noise = _draw_noise(model_output.shape, self.generator, model_output.device)
            prev_sample = prev_sample + c["noise_std"] * noise
        self.previous_x0 = pred_original
        return prev_sample, pred_original


# Coefficient builders of `DeviceSteps`: each mirrors its scheduler's `step` and returns (rows, noise_at,
# multistep_at, options), or None for an option it does not cover. Computed in float64 from the scheduler's tables.


def _x0_coefficients(prediction_type: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(x0_sample, x0_output) of x_0 for x_t = alpha x_0 + sigma eps (eps: DDPM eq. 15; v: Salimans & Ho 2022)."""
    if prediction_type == "epsilon":
        return 1 / alpha, -sigma / alpha
    if prediction_type == "v_prediction":
        return alpha, -sigma
    return 0.0, 1.0


def _clip_option(config) -> dict[str, Any]:
    return {"clip": float(config.clip_sample_range)} if config.get("clip_sample") else {}


def _ddpm_coefficients(scheduler: DDPMScheduler, eta: float):
    """Ancestral sampling, Ho et al. 2020 eq. 6-7: x_t-1 = mu(x_t, x_0) + sigma_t z, with noise at every t > 0."""
    variance_type = scheduler.config.variance_type
    if variance_type not in ("fixed_small", "fixed_small_log", "fixed_large"):
        return None  # learned variances come from the model output
    alphas_cumprod = scheduler.alphas_cumprod.detach().cpu().double()
    timesteps = scheduler.timesteps.tolist()
    rows, noise_at = [], []
    for i, t in enumerate(timesteps):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        alpha_prod_t = alphas_cumprod[t].item()
        alpha_prod_t_prev = alphas_cumprod[prev_t].item() if prev_t >= 0 else 1.0
        beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        x0_sample, x0_output = _x0_coefficients(scheduler.config.prediction_type, alpha_prod_t**0.5, beta_prod_t**0.5)
        if variance_type == "fixed_large":
            variance = current_beta_t
        else:  # the posterior variance beta~_t of eq. 7, clamped as the scheduler does before its log
            variance = max(beta_prod_t_prev / beta_prod_t * current_beta_t, 1e-20)
        rows.append(
            dict(
                x0_sample=x0_sample,
                x0_output=x0_output,
                prev_x0=alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t,
                prev_sample=current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t,
                noise_std=variance**0.5,
            )
        )
        noise_at.append(t > 0)
    return rows, noise_at, [False] * len(rows), _clip_option(scheduler.config)


def _ddim_coefficients(scheduler: DDIMScheduler, eta: float):
    """DDIM, Song et al. 2021 eq. 12 with sigma_t(eta) of eq. 16; noise at every step when eta > 0."""
    alphas_cumprod = scheduler.alphas_cumprod.detach().cpu().double()
    final_alpha_cumprod = float(scheduler.final_alpha_cumprod)
    step_ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    prediction_type = scheduler.config.prediction_type
    rows = []
    for t in scheduler.timesteps.tolist():
        prev_t = t - step_ratio
        alpha_prod_t = alphas_cumprod[t].item()
        alpha_prod_t_prev = alphas_cumprod[prev_t].item() if prev_t >= 0 else final_alpha_cumprod
        beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
        x0_sample, x0_output = _x0_coefficients(prediction_type, alpha_prod_t**0.5, beta_prod_t**0.5)
        # eps from the unclipped prediction, as the scheduler does: (eps_sample, eps_output) with eps = . x_t + . m
        if prediction_type == "epsilon":
            eps_sample, eps_output = 0.0, 1.0
        elif prediction_type == "v_prediction":
            eps_sample, eps_output = beta_prod_t**0.5, alpha_prod_t**0.5
        else:
            eps_sample, eps_output = 1 / beta_prod_t**0.5, -(alpha_prod_t**0.5) / beta_prod_t**0.5
        variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
        std_dev_t = eta * variance**0.5
        direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** 0.5
        rows.append(
            dict(
                x0_sample=x0_sample,
                x0_output=x0_output,
                prev_x0=alpha_prod_t_prev**0.5,
                prev_sample=direction * eps_sample,
                prev_output=direction * eps_output,
                noise_std=std_dev_t,
            )
        )
    options = {**_clip_option(scheduler.config), "uses_output": True}
    return rows, [eta > 0] * len(rows), [False] * len(rows), options


def _dpm_solver_coefficients(scheduler: DPMSolverMultistepScheduler, eta: float):
    """DPM-Solver++ (Lu et al. 2022): the first-order update (eq. 9, DDIM in lambda) and the 2M step (Algorithm 2)."""
    config = scheduler.config
    if (
        config.algorithm_type != "dpmsolver++"  # the SDE variant draws noise, dpmsolver works on eps
        or config.solver_order > 2
        or config.solver_type not in ("midpoint", "heun")
        or config.get("use_flow_sigmas")
        or config.variance_type in ("learned", "learned_range")
    ):
        return None
    sigmas = scheduler.sigmas.detach().cpu().double()
    alphas = 1 / (sigmas**2 + 1) ** 0.5  # alpha_t and sigma_t of x_t = alpha_t x_0 + sigma_t eps
    sigma_ts = sigmas * alphas
    lambdas = torch.log(alphas) - torch.log(sigma_ts)  # half log-SNR; +inf at a final sigma of 0
    num_steps = len(scheduler.timesteps)
    rows, multistep_at = [], []
    for i in range(num_steps):
        x0_sample, x0_output = _x0_coefficients(config.prediction_type, alphas[i].item(), sigma_ts[i].item())
        h = (lambdas[i + 1] - lambdas[i]).item()
        phi = alphas[i + 1].item() * (math.exp(-h) - 1.0)  # alpha_t (e^-h - 1)
        row = dict(
            x0_sample=x0_sample, x0_output=x0_output, prev_sample=(sigma_ts[i + 1] / sigma_ts[i]).item(), prev_x0=-phi
        )
        # The scheduler ends (and, under 15 steps, also starts its last step) with the first-order update.
        lower_order_final = i == num_steps - 1 and (
            config.euler_at_final
            or (config.lower_order_final and num_steps < 15)
            or config.final_sigmas_type == "zero"
        )
        multistep = config.solver_order == 2 and i > 0 and not lower_order_final
        if multistep:
            r0 = (lambdas[i] - lambdas[i - 1]).item() / h  # D1 = (x0 - x0') / r0
            if config.solver_type == "midpoint":
                row.update(prev_x0_multistep=-phi - 0.5 * phi / r0, prev_x0_last=0.5 * phi / r0)
            else:
                heun = alphas[i + 1].item() * ((math.exp(-h) - 1.0) / h + 1.0)
                row.update(prev_x0_multistep=-phi + heun / r0, prev_x0_last=-heun / r0)
        rows.append(row)
        multistep_at.append(multistep)
    return rows, [False] * num_steps, multistep_at, {}


def _euler_coefficients(scheduler: EulerDiscreteScheduler, eta: float):
    """Euler's method on the probability-flow ODE in sigma (Karras et al. 2022, Algorithm 1 with s_churn = 0)."""
    sigmas = scheduler.sigmas.detach().cpu().double()
    rows = []
    for i in range(len(scheduler.timesteps)):
        sigma, sigma_next = sigmas[i].item(), sigmas[i + 1].item()
        if scheduler.config.prediction_type == "epsilon":
            x0_sample, x0_output = 1.0, -sigma  # x_0 = x - sigma eps, x in the sigma scale
        else:
            x0_sample, x0_output = _x0_coefficients(
                scheduler.config.prediction_type, 1 / (sigma**2 + 1), sigma / (sigma**2 + 1) ** 0.5
            )
        dt_over_sigma = (sigma_next - sigma) / sigma  # x + (x - x_0) / sigma * dt
        rows.append(
            dict(
                input_scale=1 / (sigma**2 + 1) ** 0.5,
                x0_sample=x0_sample,
                x0_output=x0_output,
                prev_sample=1 + dt_over_sigma,
                prev_x0=-dt_over_sigma,
            )
        )
    return rows, [False] * len(rows), [False] * len(rows), {"scales_input": True}
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
    Pipeline for image generation from a DDPM-trained `UNet2DModel`, unconditional or class-conditional.

    Works with any diffusers scheduler built from the training scheduler's config (DDPM, DDIM, PNDM, Euler,
    Euler ancestral, Heun, LMS, DPM-Solver++, UniPC, DEIS); pick one by name with [`~DDPMHubPipeline.set_sampler`].
    Beyond [`~diffusers.DDPMPipeline`] it takes `latents` and `eta`, calls `callback_on_step_end`, can return the
    denoising trajectory, and noises images forward with [`~DDPMHubPipeline.q_sample`]. DDPM, DDIM, DPM-Solver++ and
    Euler step on the device without host syncs (`DeviceSteps`); [`~DDPMHubPipeline.compile`] adds CUDA graphs.

    A class-conditional UNet (`num_class_embeds` = number of classes + 1; the last id is the "null" class that
    classifier-free guidance uses) takes `class_labels`, by id or by name, and `guidance_scale`.

    The same model edits images: [`~DDPMHubPipeline.img2img`] (SDEdit), [`~DDPMHubPipeline.inpaint`] (RePaint),
    [`~DDPMHubPipeline.invert`] (DDIM inversion) and [`~DDPMHubPipeline.interpolate`].

    Parameters:
        unet ([`UNet2DModel`]):
            The denoiser, predicting noise (epsilon), v or the clean sample as its scheduler config says.
        scheduler ([`SchedulerMixin`]):
            The scheduler used to denoise; its config holds the training noise schedule.
        label_names (`list[str]` or `dict[str, str]`, *optional*):
            The names of the classes of a class-conditional UNet, in id order (or as {id: name}). Saved in
            `model_index.json` as {id: name}, since diffusers reads every list there as a component.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]
    # Step DDPM, DDIM, DPM-Solver++ and Euler with `DeviceSteps` (no host syncs); False steps every sampler with
    # the scheduler's own `step`, the reference those steps are tested against.
    device_steps: bool = True
    _cuda_graphs = False  # set by `compile`

    def __init__(
        self, unet: UNet2DModel, scheduler: SchedulerMixin, label_names: list[str] | dict[str, str] | None = None
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        num_class_embeds = unet.config.get("num_class_embeds")
        if unet.config.get("class_embed_type") is not None:
            raise ValueError(
                f"DDPMHubPipeline supports class ids through `num_class_embeds` only, not class_embed_type "
                f"{unet.config.class_embed_type!r}."
            )
        if label_names is not None:
            if isinstance(label_names, dict):
                label_names = [label_names[key] for key in sorted(label_names, key=int)]
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
            # Only conditional pipelines carry the key, so unconditional ones keep the plain DDPMPipeline index.
            self.register_to_config(label_names={str(i): name for i, name in enumerate(label_names)})
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

    @property
    def num_classes(self) -> int:
        """The number of classes of a class-conditional model (the null class not counted); 0 if unconditional."""
        num_class_embeds = self.unet.config.get("num_class_embeds")
        return 0 if num_class_embeds is None else num_class_embeds - 1

    @property
    def label_names(self) -> list[str] | None:
        """The class names, in id order, of a conditional model saved with them; else `None`."""
        names = self.config.get("label_names")
        return [names[key] for key in sorted(names, key=int)] if names is not None else None

    @property
    def null_class_id(self) -> int:
        """The class id the model was trained with in place of a dropped label: the unconditional model."""
        return self.num_classes

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
                raise ValueError(f"Got {len(labels)} `class_labels` for a batch of {batch_size}; pass one, or one per image.")
            ids = [self._class_id(label) for label in labels]
            guidance_scale = DEFAULT_GUIDANCE_SCALE if guidance_scale is None else float(guidance_scale)
        return torch.tensor(ids, dtype=torch.long, device=device), guidance_scale

    def _class_id(self, label) -> int:
        names = self.label_names
        if isinstance(label, str):
            if names is not None and label in names:
                return names.index(label)
            if label.strip().isdigit():  # an id written as text, as on the command line
                return self._class_id(int(label))
            known = f"this model knows: {', '.join(names)}" if names else "this model has no label names; use ids"
            raise ValueError(f"Unknown class label {label!r}; {known}.")
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"A class label must be an id (int) or a name (str), got {label!r}.")
        label = int(label)
        if not 0 <= label < self.num_classes:
            raise ValueError(
                f"Class id {label} is out of range; this model has {self.num_classes} classes (ids 0 to {self.num_classes - 1})."
            )
        return label

    def compile(
        self, mode: str | None = None, *, backend: str = "inductor", fullgraph: bool = False
    ) -> "DDPMHubPipeline":
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
    ) -> torch.Tensor:
        """The UNet's prediction (noise, v or x_0) at step t in float32, with classifier-free guidance for labels.

        This is the one place where the UNet is called. Guidance (Ho & Salimans 2022, eq. 6, written with diffusers'
        scale s = 1 + w): out = out_null + s (out_class - out_null), from one batched UNet call on [null; class]. It
        is applied to the model output whatever it predicts: eps, v = (eps - sigma_t x_t) / alpha_t and
        x_0 = (x_t - sigma_t eps) / alpha_t are affine in eps at a fixed x_t, and the weights (1 - s) and s sum to
        one, so guiding v or x_0 equals guiding eps and converting. s = 1 is the conditional model alone, s = 0 the
        unconditional one.
        """
        if class_labels is None:
            return self._unet(model_input, t)
        if guidance_scale == 1:
            return self._unet(model_input, t, class_labels)
        null_labels = torch.full_like(class_labels, self.null_class_id)
        if guidance_scale == 0:
            return self._unet(model_input, t, null_labels)
        both = self._unet(torch.cat([model_input, model_input]), t, torch.cat([null_labels, class_labels]))
        unconditional, conditional = both.chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def _unet(self, model_input: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        compiled = getattr(self.unet, "_compiled_call_impl", None) is not None or is_compiled_module(self.unet)
        if self._cuda_graphs:
            # Each call starts a new CUDA-graph generation (the last output is dead by now), also in a process where
            # something else marks steps by hand, after which torch stops counting calls as generations.
            torch.compiler.cudagraph_mark_step_begin()
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
        return split_prediction(model_output, sample, alpha_prod_t, self.scheduler.config.prediction_type)[0]

    def postprocess(self, sample: torch.Tensor, output_type: str):
        """Map a sample in [-1, 1] to images of `output_type` ("pil", "np" or "pt" in [0, 1])."""
        return self.image_processor.postprocess(sample.float().clamp(-1, 1), output_type=output_type)

    def _denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        steps: "DeviceSteps | SchedulerSteps",
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
            model_output = self._model_output(model_input, t, class_labels, guidance_scale)

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

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: int | str | Sequence[int | str] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
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
                The number of images to generate; with a list of `class_labels`, defaults to its length.
            class_labels (`int`, `str`, `list` or `torch.Tensor`, *optional*):
                For a class-conditional model: the class of every image, by id or by name (see `label_names`), or
                one per image. Without it a conditional model samples its unconditional (null-class) model.
            guidance_scale (`float`, *optional*, defaults to 3.0 with `class_labels`):
                Classifier-free guidance scale s (Ho & Salimans 2022): 1 is the conditional model alone, 0 the
                unconditional one, larger values give more class-typical, less varied images.
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

        >>> pipe = DDPMHubPipeline.from_pretrained("org/emoji-by-category")  # class-conditional
        >>> images = pipe(class_labels=["Animals & Nature", "Food & Drink"], guidance_scale=3.0).images
        ```

        Returns:
            [`DDPMHubPipelineOutput`] or `tuple`: the images (and trajectory if asked for); a tuple of the
            non-empty fields when `return_dict` is `False`.
        """
        if batch_size == 1 and isinstance(class_labels, (list, tuple, torch.Tensor)) and len(class_labels) > 1:
            batch_size = len(class_labels)
        self.check_inputs(batch_size, num_inference_steps, output_type, latents, generator, trajectory_stride)
        device = self._execution_device
        class_labels, guidance_scale = self.prepare_class_labels(class_labels, batch_size, guidance_scale, device)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"Unknown callback tensor inputs {sorted(unknown)}; allowed: {self._callback_tensor_inputs}.")

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
        latents, trajectory, pred_original_trajectory, trajectory_timesteps = self._denoise(
            latents,
            timesteps,
            self._steps(generator, eta),
            class_labels=class_labels,
            guidance_scale=guidance_scale,
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

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike):
        # diffusers reads `model_index.json` through the class being loaded. Loaded through this class, a conditional
        # model's index names it directly, so no remote code is needed (nor run) to load it.
        config = super()._dict_from_json_file(json_file)
        if config.get("_class_name") == CONDITIONAL_CLASS_NAME:
            config["_class_name"] = cls.__name__
        return config
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
        latents = self._denoise(latents, timesteps, self._steps(generator, eta), start_index=t_start)[0]
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

        For an unconditional model `model_index.json` names the stock `DDPMPipeline`, so
        `DiffusionPipeline.from_pretrained` works anywhere with no `trust_remote_code`. A class-conditional model
        names this class in `pipeline.py` instead (`DDPMPipeline` could not pass its class labels), so stock
        diffusers asks for `trust_remote_code=True` and then loads this class. This file is stored beside the
        weights as `pipeline.py`; `DDPMHubPipeline.from_pretrained` returns this class directly, without remote code.
        """
        push_to_hub = kwargs.pop("push_to_hub", False)
        if not safe_serialization:
            raise ValueError("DDPMHubPipeline saves safetensors weights only.")
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
        index["_class_name"] = CONDITIONAL_CLASS_NAME if self.num_classes else "DDPMPipeline"
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
