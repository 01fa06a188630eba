# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""The sampling engine of `DDPMHubPipeline`: the sampler registry, torch.compile helpers and the denoising steps.

Shipped beside the weights with `pipeline.py` (torch and diffusers only), and imported by ddpm-hub itself (the
CLI, text-to-image, the explorer, training's compile options): `COMPILE_MODES` and `SAMPLERS` live here only.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import diffusers
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_parameterization import eps_coefficients, x0_coefficients
from .pipeline_variance import LEARNED_VARIANCE_TYPES, learned_range_log_variance, split_variance

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


def scheduler_from_name(name: str, config, **overrides) -> SchedulerMixin:
    """Build the scheduler called `name` (a key of `SAMPLERS`) from an existing scheduler `config`.

    Raises `ValueError` for an unknown name, and for a zero-terminal-SNR model paired with a scheduler that
    cannot rescale its betas (it would silently sample from the wrong noise levels).
    """
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}.")
    class_name, defaults = SAMPLERS[name]
    scheduler_cls = getattr(diffusers, class_name)
    parameters = inspect.signature(scheduler_cls.__init__).parameters
    if scheduler_cls is not DDPMScheduler and "variance_type" in parameters:
        # Only DDPM steps a learned variance; the others get the prediction alone from the pipeline (DPM-Solver would
        # otherwise keep the first 3 channels of it, wrong for latents).
        defaults = {**defaults, "variance_type": None}
    if config.get("rescale_betas_zero_snr") and "rescale_betas_zero_snr" not in parameters:
        raise ValueError(
            f"Sampler {name!r} ({class_name}) cannot sample a model trained with zero terminal SNR; "
            "use one of: ddpm, ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc."
        )
    return scheduler_cls.from_config(explicit_config(config), **{**defaults, **overrides})


def explicit_config(config) -> dict[str, Any]:
    """A scheduler config with every value explicit, for building another scheduler class from it.

    A scheduler built in memory lists the arguments it was not given in `_use_default_values`, and `from_config`
    drops those keys, so another class would fall back on its own defaults (Heun's betas are 0.00085 to 0.012, not
    DDPM's 0.0001 to 0.02); saved configs do not carry the list.
    """
    return {key: value for key, value in config.items() if key != "_use_default_values"}


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
        # DDPMScheduler splits a learned variance off the model output itself; other schedulers take the prediction.
        self.takes_variance = (
            isinstance(scheduler, DDPMScheduler) and scheduler.config.get("variance_type") in LEARNED_VARIANCE_TYPES
        )

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
    images match the scheduler's own `step` to floating-point rounding. DDPM with a learned variance
    (`learned_range`) takes it from the model output's second half: noise_std = exp(log Sigma_theta / 2), log
    Sigma_theta between the step's `min_log` (log beta~_t) and `max_log` (log beta_t).
    """

    COEFFICIENTS = (
        "input_scale", "x0_sample", "x0_output", "prev_sample", "prev_output", "prev_x0", "noise_std",
        "prev_x0_multistep", "prev_x0_last", "min_log", "max_log",
    )  # fmt: skip

    def __init__(self, rows: list[dict[str, float]], noise_at: list[bool], multistep_at: list[bool], device, *,
                 clip: float | None = None, scales_input: bool = False, uses_output: bool = False,
                 learned_range: bool = False, generator=None):  # fmt: skip
        table = torch.tensor([[row.get(name, 0.0) for name in self.COEFFICIENTS] for row in rows], dtype=torch.float64)
        # One (steps,) float32 tensor per coefficient; indexing it with a Python int is a view, not a sync.
        self.coefficients = dict(zip(self.COEFFICIENTS, table.float().to(device).unbind(1)))  # (MPS has no float64)
        self.noise_at, self.multistep_at = noise_at, multistep_at
        self.clip, self.scales_input, self.uses_output, self.generator = clip, scales_input, uses_output, generator
        self.takes_variance = learned_range  # the model output holds the variance channels after the prediction
        self.previous_x0: torch.Tensor | None = None  # DPM-Solver++(2M) state: x_0 of the step before

    @classmethod
    def from_scheduler(cls, scheduler: SchedulerMixin, eta: float = 0.0, generator=None) -> DeviceSteps | None:
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
        model_output, variance_values = split_variance(model_output, sample.shape[1])
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
            noise_std = c["noise_std"]
            if self.takes_variance:  # Improved DDPM, eq. 15
                noise_std = torch.exp(0.5 * learned_range_log_variance(variance_values, c["min_log"], c["max_log"]))
            prev_sample = prev_sample + noise_std * noise
        self.previous_x0 = pred_original
        return prev_sample, pred_original


# Coefficient builders of `DeviceSteps`: each mirrors its scheduler's `step` and returns (rows, noise_at,
# multistep_at, options), or None for an option it does not cover. Computed in float64 from the scheduler's tables.


def _clip_option(config) -> dict[str, Any]:
    return {"clip": float(config.clip_sample_range)} if config.get("clip_sample") else {}


def _ddpm_coefficients(scheduler: DDPMScheduler, eta: float):
    """Ancestral sampling, Ho et al. 2020 eq. 6-7: x_t-1 = mu(x_t, x_0) + sigma_t z, with noise at every t > 0."""
    variance_type = scheduler.config.variance_type
    if variance_type not in ("fixed_small", "fixed_small_log", "fixed_large", "learned_range"):
        return None  # "learned" (the variance itself) and the log variants are left to the scheduler
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
        x0_sample, x0_output = x0_coefficients(scheduler.config.prediction_type, alpha_prod_t**0.5, beta_prod_t**0.5)
        # the posterior variance beta~_t of eq. 7, clamped as the scheduler does before its log
        posterior_variance = max(beta_prod_t_prev / beta_prod_t * current_beta_t, 1e-20)
        variance = current_beta_t if variance_type == "fixed_large" else posterior_variance
        rows.append(
            dict(
                x0_sample=x0_sample,
                x0_output=x0_output,
                prev_x0=alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t,
                prev_sample=current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t,
                noise_std=variance**0.5,
                min_log=math.log(posterior_variance),
                max_log=math.log(max(current_beta_t, 1e-20)),
            )
        )
        noise_at.append(t > 0)
    options = {**_clip_option(scheduler.config), "learned_range": variance_type == "learned_range"}
    return rows, noise_at, [False] * len(rows), options


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
        x0_sample, x0_output = x0_coefficients(prediction_type, alpha_prod_t**0.5, beta_prod_t**0.5)
        # eps from the unclipped prediction, as the scheduler does: eps = eps_sample x_t + eps_output m
        eps_sample, eps_output = eps_coefficients(prediction_type, alpha_prod_t**0.5, beta_prod_t**0.5)
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
        x0_sample, x0_output = x0_coefficients(config.prediction_type, alphas[i].item(), sigma_ts[i].item())
        h = (lambdas[i + 1] - lambdas[i]).item()
        phi = alphas[i + 1].item() * (math.exp(-h) - 1.0)  # alpha_t (e^-h - 1)
        row = dict(
            x0_sample=x0_sample, x0_output=x0_output, prev_sample=(sigma_ts[i + 1] / sigma_ts[i]).item(), prev_x0=-phi
        )
        # The scheduler ends (and, under 15 steps, also starts its last step) with the first-order update.
        lower_order_final = i == num_steps - 1 and (
            config.euler_at_final or (config.lower_order_final and num_steps < 15) or config.final_sigmas_type == "zero"
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
            x0_sample, x0_output = x0_coefficients(
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
