"""The diffusion process whose variational bound is computed: the training schedule, or a respaced subset of it.

A model trained on T timesteps defines a process on any increasing subset tau_0 < ... < tau_{N-1} of them (Nichol &
Dhariwal 2021, Sec. 4): alpha_bar_i = alpha_bar(tau_i) and beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}, with
alpha_bar_{-1} = 1. The ancestral `ddpm` sampler with N steps runs exactly this process (diffusers' `DDPMScheduler`
respaces its betas so), so its bound is the bound of the N-step sampler. Step i calls the model at timestep tau_i.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from diffusers import DDPMScheduler

from ..pipeline_variance import learned_range_log_variance

# How the reverse-step variance is chosen (the scheduler's `variance_type` names).
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
# diffusers' other names for the same fixed variances.
_SAME_VARIANCE = {"fixed_small_log": "fixed_small", "fixed_large_log": "fixed_large"}


def bound_variance(variance_type: str | None) -> str:
    """A scheduler's `variance_type` as the bound takes it (one of `VARIANCE_TYPES`; None is diffusers' default)."""
    name = _SAME_VARIANCE.get(variance_type or "fixed_small", variance_type or "fixed_small")
    if name not in VARIANCE_TYPES:
        raise ValueError(
            f"The variational bound takes the variance types {', '.join(VARIANCE_TYPES)} (and their _log forms), "
            f"not {variance_type!r}."
        )
    return name


def _per_image(table: torch.Tensor, index: torch.Tensor, ndim: int) -> torch.Tensor:
    """table[index], shaped (N, 1, 1, ...) to broadcast over a batch of `ndim`-dimensional samples."""
    return table[index].reshape(-1, *([1] * (ndim - 1)))


@dataclass(frozen=True)
class DiffusionProcess:
    """The tables of a (possibly respaced) Gaussian diffusion, one entry per step i, computed in float64 and kept in
    float32 on one device (indexing them with device indices needs no host sync)."""

    timesteps: torch.Tensor  # tau_i, the model's timestep at step i (int64)
    alphas_cumprod: torch.Tensor  # alpha_bar_i
    alphas_cumprod_prev: torch.Tensor  # alpha_bar_{i-1}, 1 at i = 0
    betas: torch.Tensor  # beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}
    posterior_variance: torch.Tensor  # beta~_i = beta_i (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i), DDPM eq. 7
    posterior_log_variance: torch.Tensor  # log beta~_i, with beta~_1 at i = 0 (where beta~_0 = 0)
    posterior_mean_x0: torch.Tensor  # the posterior mean's coefficients on x_0 and x_t (DDPM eq. 7)
    posterior_mean_xt: torch.Tensor

    @classmethod
    def from_scheduler(
        cls, scheduler: DDPMScheduler, num_steps: int | None = None, device: torch.device | str | None = None
    ) -> DiffusionProcess:
        """The training schedule of `scheduler` (any diffusers scheduler built from the training config), or with
        `num_steps` the process of the `ddpm` sampler at that many steps (the scheduler's timestep spacing)."""
        schedule = DDPMScheduler.from_config(scheduler.config)
        total = schedule.config.num_train_timesteps
        if num_steps is None or num_steps == total:
            timesteps = torch.arange(total)
        else:
            if not 2 <= num_steps <= total:
                raise ValueError(f"The number of steps must lie in [2, {total}], got {num_steps}.")
            schedule.set_timesteps(num_steps)
            timesteps = schedule.timesteps.flip(0).cpu()
        return cls.from_alphas_cumprod(schedule.alphas_cumprod.double()[timesteps], timesteps, device)

    @classmethod
    def from_alphas_cumprod(
        cls, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, device: torch.device | str | None = None
    ) -> DiffusionProcess:
        """The process with these alpha_bar_i (increasing steps i) at the model's `timesteps`."""
        alphas_cumprod = alphas_cumprod.double()
        if len(alphas_cumprod) < 2:
            raise ValueError("A diffusion process needs at least 2 steps.")
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        betas = 1 - alphas_cumprod / prev
        posterior_variance = betas * (1 - prev) / (1 - alphas_cumprod)
        # beta~_0 = 0: its log is taken from step 1, as the decoder at i = 0 needs a finite variance.
        clipped = torch.cat([posterior_variance[1:2], posterior_variance[1:]])
        tables = dict(
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=prev,
            betas=betas,
            posterior_variance=posterior_variance,
            posterior_log_variance=torch.log(clipped),
            posterior_mean_x0=betas * prev.sqrt() / (1 - alphas_cumprod),
            posterior_mean_xt=(1 - prev) * (1 - betas).sqrt() / (1 - alphas_cumprod),
        )
        tables = {name: table.float().to(device) for name, table in tables.items()}
        return cls(timesteps=timesteps.long().to(device), **tables)

    def __len__(self) -> int:
        return len(self.timesteps)

    def to(self, device: torch.device | str) -> DiffusionProcess:
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def alpha_sigma(self, index: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_i), sqrt(1 - alpha_bar_i)) per image: x_i = alpha_i x_0 + sigma_i eps."""
        alpha_bar = _per_image(self.alphas_cumprod, index, ndim)
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def q_sample(self, x0: torch.Tensor, index: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_i = sqrt(alpha_bar_i) x_0 + sqrt(1 - alpha_bar_i) eps (DDPM eq. 4)."""
        alpha, sigma = self.alpha_sigma(index, x0.ndim)
        return alpha * x0 + sigma * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, index: torch.Tensor):
        """Mean and log variance of q(x_{i-1} | x_i, x_0) (DDPM eq. 6-7); the log variance is clipped at i = 0."""
        mean = (
            _per_image(self.posterior_mean_x0, index, x_t.ndim) * x0
            + _per_image(self.posterior_mean_xt, index, x_t.ndim) * x_t
        )
        return mean, _per_image(self.posterior_log_variance, index, x_t.ndim)

    def log_variance(
        self, index: torch.Tensor, variance_type: str, variance_values: torch.Tensor | None, ndim: int
    ) -> torch.Tensor:
        """log Sigma of the reverse step p(x_{i-1} | x_i) for `variance_type` (see `VARIANCE_TYPES`).

        fixed_small is beta~_i, fixed_large beta_i (with beta~_1 at i = 0, the better decoder, as Improved DDPM's
        code does), learned_range interpolates the two logs with the model's `variance_values` (eq. 15).
        """
        min_log = _per_image(self.posterior_log_variance, index, ndim)
        if variance_type == "fixed_small":
            return min_log
        max_log = _per_image(torch.log(self.betas), index, ndim)
        if variance_type == "fixed_large":
            first = index.reshape(-1, *([1] * (ndim - 1))) == 0
            return torch.where(first, min_log, max_log)
        if variance_type == "learned_range":
            if variance_values is None:
                raise ValueError("variance_type 'learned_range' needs a model output with the variance channels.")
            return learned_range_log_variance(variance_values, min_log, max_log)
        raise ValueError(f"Unknown variance type {variance_type!r}; choose one of: {', '.join(VARIANCE_TYPES)}.")
