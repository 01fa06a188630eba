"""The rounds of progressive distillation and the DDIM grid each one distills, from the teacher's own schedule.

Each round halves the sampling steps (Salimans & Ho 2022, Algorithm 2, line 16): a student of N steps learns, at
each of its steps t -> t_prev, the two steps t -> t_mid -> t_prev of its teacher. The grid is the one diffusers'
`DDIMScheduler` samples with, "trailing" spacing (Lin et al. 2023, Table 2: the first step starts from pure noise
at t = T - 1, which few-step samplers need), and DDIM's own step t -> t - T // N, so that the student is trained on
exactly the steps that `pipe()` takes. The teacher's grid of 2N steps nests in it exactly when 2N divides T; for
other T its middle level t - T // (2N) is off by at most one timestep from the level its own sampler would use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from .targets import Level

# The longest student chain distilled on whole trajectories (epsilon teachers, `DistillStep.trajectory_loss`): its N
# UNet passes keep their activations for the backward pass.
TRAJECTORY_STEPS = 8

# Settings of the student's (and of the teacher's distillation-time) DDIM sampler.
DDIM_OVERRIDES = {"timestep_spacing": "trailing", "steps_offset": 0}


def is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


def round_step_counts(start_steps: int, end_steps: int) -> list[int]:
    """The students' step counts, one per round: start/2, start/4, ..., end (e.g. 8, 4 -> [4])."""
    counts, steps = [], start_steps
    while steps > end_steps:
        steps //= 2
        counts.append(steps)
    return counts


def ddim_scheduler(scheduler_config, num_inference_steps: int | None = None) -> DDIMScheduler:
    """The DDIM sampler of a teacher's schedule (trailing spacing), with `set_timesteps` applied if steps are given."""
    scheduler = DDIMScheduler.from_config(scheduler_config, **DDIM_OVERRIDES)
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    return scheduler


@dataclass
class StepGrid:
    """The student's DDIM steps t_i -> t_prev_i and the teacher's middle levels, as per-step tables (on a device)."""

    timesteps: torch.Tensor  # (N,) long: t of each student step, as DDIMScheduler.timesteps
    mid_timesteps: torch.Tensor  # (N,) long: the teacher's intermediate level t'
    start: Level  # alpha, sigma at t
    mid: Level  # at t'
    end: Level  # at t'' = t - T // N (alpha 1, sigma 0 past t = 0 with set_alpha_to_one)

    def to(self, device) -> StepGrid:
        def move(level: Level) -> Level:
            return Level(level.alpha.to(device), level.sigma.to(device))

        return StepGrid(
            self.timesteps.to(device), self.mid_timesteps.to(device), move(self.start), move(self.mid), move(self.end)
        )


def step_grid(scheduler_config, student_steps: int) -> StepGrid:
    """The grid a student of `student_steps` DDIM steps is distilled on (float32 tables, computed in float64)."""
    scheduler = ddim_scheduler(scheduler_config, student_steps)
    num_train_timesteps = scheduler.config.num_train_timesteps
    alphas_cumprod = scheduler.alphas_cumprod.double()
    final = torch.tensor(float(scheduler.final_alpha_cumprod), dtype=torch.float64)

    def level(timesteps: torch.Tensor) -> Level:
        alpha_bar = torch.where(timesteps >= 0, alphas_cumprod[timesteps.clamp(min=0)], final)
        return Level(alpha_bar.sqrt().float(), (1 - alpha_bar).sqrt().float())

    timesteps = scheduler.timesteps.long()
    mid = timesteps - num_train_timesteps // (2 * student_steps)
    end = timesteps - num_train_timesteps // student_steps
    return StepGrid(timesteps, mid, level(timesteps), level(mid), level(end))


def check_ddim_can_run(scheduler_config, unet_config, start_steps: int) -> None:
    """Refuse, with one sentence, a teacher whose schedule or head deterministic DDIM cannot sample."""
    try:
        scheduler = ddim_scheduler(scheduler_config)
    except (ValueError, NotImplementedError, TypeError) as error:
        raise ValueError(f"the teacher's noise schedule cannot be sampled with DDIM: {error}") from error
    config = scheduler.config
    if config.prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(
            f"the teacher predicts {config.prediction_type!r}; DDIM needs epsilon, v_prediction or sample."
        )
    if config.num_train_timesteps < start_steps:
        raise ValueError(
            f"--start_steps {start_steps} needs a teacher of at least {start_steps} training timesteps, "
            f"this one has {config.num_train_timesteps}; lower --start_steps."
        )
    if config.prediction_type == "epsilon" and float(scheduler.alphas_cumprod[-1]) == 0.0:
        raise ValueError(
            "the teacher predicts epsilon on a zero-terminal-SNR schedule, from which DDIM cannot recover x_0 at "
            "t = T - 1 (alpha_bar = 0); distill a v_prediction teacher instead."
        )
    if unet_config.get("out_channels", 3) != unet_config.get("in_channels", 3):
        raise ValueError(
            f"the teacher's UNet outputs {unet_config.get('out_channels')} channels for "
            f"{unet_config.get('in_channels')} input channels (learned variances); deterministic DDIM distillation "
            "needs a plain prediction."
        )
