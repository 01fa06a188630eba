"""Noise schedules by the names of DDPM papers and tutorials, computed by diffusers' `DDPMScheduler`.

The math stays in diffusers; this module maps names onto it, builds the training scheduler, and exposes the
curves (betas, alpha_bar, SNR) that users want to look at when they choose a schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler

# User-facing names -> diffusers' `beta_schedule`. diffusers' own names are accepted as they are.
BETA_SCHEDULES: dict[str, str] = {
    "linear": "linear",  # Ho et al. 2020: beta from 1e-4 to 0.02
    "cosine": "squaredcos_cap_v2",  # Nichol & Dhariwal 2021, eq. 17 (s = 0.008, beta capped at 0.999)
    "quadratic": "scaled_linear",  # sqrt(beta) linear, as in latent diffusion
    "sigmoid": "sigmoid",  # sigmoid over [-6, 6] scaled to [beta_start, beta_end] (Jabri et al. 2022 flavour)
    "scaled_linear": "scaled_linear",
    "squaredcos_cap_v2": "squaredcos_cap_v2",
    "laplace": "laplace",  # Hang et al. 2024, importance-sampled around mid SNR
}

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

# Beta schedules that every scheduler in the pipeline's SAMPLERS can rebuild from its name. Models trained with any
# other schedule carry `trained_betas` in their scheduler config instead (see `make_noise_scheduler`).
PORTABLE_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def resolve_beta_schedule(name: str) -> str:
    """The diffusers `beta_schedule` for a schedule `name`; a `ValueError` lists the accepted names."""
    if name not in BETA_SCHEDULES:
        raise ValueError(f"Unknown beta schedule {name!r}; choose one of: {', '.join(BETA_SCHEDULES)}.")
    return BETA_SCHEDULES[name]


def make_noise_scheduler(
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    prediction_type: str = "epsilon",
    rescale_betas_zero_snr: bool = False,
    **kwargs,
) -> DDPMScheduler:
    """The training `DDPMScheduler` for a schedule name, portable to every sampler of `SAMPLERS`.

    Schedules that only `DDPMScheduler` can compute (sigmoid, laplace) are stored as explicit `trained_betas`,
    so that DDIM, DPM-Solver and the others rebuild exactly the same noise levels from the saved config.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"Unknown prediction type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}.")
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}.")
    diffusers_name = resolve_beta_schedule(beta_schedule)
    config = dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=diffusers_name,
        prediction_type=prediction_type,
        rescale_betas_zero_snr=rescale_betas_zero_snr,
        **kwargs,
    )
    if diffusers_name not in PORTABLE_BETA_SCHEDULES:
        # The betas before any zero-SNR rescaling: each sampler applies `rescale_betas_zero_snr` itself, in the
        # way its own math needs (sigma-space samplers cannot take an infinite final sigma).
        base = DDPMScheduler(**{**config, "rescale_betas_zero_snr": False})
        config["trained_betas"] = base.betas.tolist()
    return DDPMScheduler(**config)


@dataclass
class ScheduleCurves:
    """The noise schedule as tensors indexed by training timestep t = 0 .. T-1."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor  # alpha_bar_t = prod_{s<=t} (1 - beta_s)
    snr: torch.Tensor  # alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021)


def schedule_curves(
    beta_schedule: str = "linear", num_train_timesteps: int = 1000, rescale_betas_zero_snr: bool = False
) -> ScheduleCurves:
    """betas, alpha_bar and SNR of a schedule, as the training scheduler computes them.

    Example:

    ```py
    >>> curves = schedule_curves("cosine")
    >>> float(curves.alphas_cumprod[-1])  # how much signal is left at t = T - 1
    ```
    """
    scheduler = make_noise_scheduler(beta_schedule, num_train_timesteps, rescale_betas_zero_snr=rescale_betas_zero_snr)
    return scheduler_curves(scheduler)


def scheduler_curves(scheduler) -> ScheduleCurves:
    """betas, alpha_bar and SNR of the training schedule in a scheduler's config (a loaded model's own schedule)."""
    scheduler = DDPMScheduler.from_config(scheduler.config)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    return ScheduleCurves(
        betas=scheduler.betas.double(), alphas_cumprod=alphas_cumprod, snr=alphas_cumprod / (1 - alphas_cumprod)
    )


def plot_schedules(
    path: str | Path,
    schedules: tuple[str, ...] = ("linear", "cosine", "quadratic", "sigmoid"),
    num_train_timesteps: int = 1000,
) -> Path:
    """Plot alpha_bar(t) and log SNR(t) of several schedules side by side and save the figure as a PNG.

    Needs matplotlib (`pip install "ddpm-hub[plot]"`).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError('plot_schedules needs matplotlib: pip install "ddpm-hub[plot]"') from error
    from .files import atomic_file

    fig, (ax_alpha, ax_snr) = plt.subplots(1, 2, figsize=(11, 4))
    for name in schedules:
        curves = schedule_curves(name, num_train_timesteps)
        t = torch.arange(num_train_timesteps)
        ax_alpha.plot(t, curves.alphas_cumprod, label=name)
        ax_snr.plot(t, curves.snr.log10(), label=name)
    ax_alpha.set(title=r"$\bar\alpha_t$ (signal kept)", xlabel="timestep t", ylabel=r"$\bar\alpha_t$")
    ax_snr.set(title="SNR(t)", xlabel="timestep t", ylabel=r"$\log_{10}$ SNR")
    for ax in (ax_alpha, ax_snr):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
