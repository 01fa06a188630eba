"""The math of progressive distillation (Salimans & Ho 2022, Algorithm 2) as small pure functions.

Notation of the paper: z_t = alpha_t x + sigma_t eps with alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t);
t' and t'' are the teacher's intermediate and final levels, t'' being the level the student's one step reaches.

The target is the paper's x target (Algorithm 2, line 11), and for v-prediction and sample teachers the loss is
the paper's too: ||x_tilde - x_hat||^2 in x-space, weighted by the truncated SNR max(SNR(t), 1) (section 4,
"truncated SNR weighting"). x-space rather than v-space because the student keeps its teacher's head, and the x
loss is then one loss whatever that head predicts; for a v student ||x - x_hat||^2 = sigma_t^2 ||v - v_hat||^2,
so max(SNR, 1) differs from the plain v loss (weight SNR + 1) only by the truncation at low SNR.

Epsilon teachers get the same target expressed as an eps target, eps_tilde = (z_t - alpha_t x_tilde) / sigma_t,
with the plain eps loss (x-space weight SNR(t)): max(SNR, 1) in x-space is max(1, 1/SNR) in eps-space, which grows
without bound as alpha_t -> 0 at the first, pure-noise step, where x_hat = (z_t - sigma_t eps_hat) / alpha_t
magnifies every error of eps_hat (the instability section 4 of the paper reports for eps students).

When the teacher's sampler clips x_0 (`clip_sample`), the student's does too, and x_tilde is not what it must predict:
diffusers' DDIM step clamps x_hat but keeps the unclipped eps_hat, so a student predicting an x_tilde beyond the clip
range does not land on z_t''. `clipped_x_target` gives the x_hat that does (at t = T - 1 on a linear schedule, 80% of
x_tilde's pixels of a trained tiny teacher are beyond +-1, and up to 30 in size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import pipeline_parameterization as parameterization


@dataclass(frozen=True)
class Level:
    """One noise level of z_t = alpha x + sigma eps (tensors shaped to broadcast over a batch, or floats)."""

    alpha: torch.Tensor
    sigma: torch.Tensor


def predicted_x0(prediction_type: str, sample: torch.Tensor, model_output: torch.Tensor, level: Level) -> torch.Tensor:
    """x_hat from a model output at `level` (see `ddpm_hub.pipeline_parameterization.predicted_x0`)."""
    return parameterization.predicted_x0(prediction_type, sample, model_output, level.alpha, level.sigma)


def predicted_eps(prediction_type: str, sample: torch.Tensor, model_output: torch.Tensor, level: Level) -> torch.Tensor:
    """eps_hat from a model output at `level`, from the unclipped prediction (as DDIMScheduler.step takes it)."""
    return parameterization.predicted_eps(prediction_type, sample, model_output, level.alpha, level.sigma)


def ddim_step(
    prediction_type: str,
    sample: torch.Tensor,
    model_output: torch.Tensor,
    level: Level,
    prev: Level,
    clip: float | None = None,
) -> torch.Tensor:
    """One deterministic DDIM step (Song et al. 2021 eq. 12, eta = 0) from `level` to `prev`, x_hat clipped to
    [-clip, clip] when `clip` is given, as the student's sampler steps."""
    return parameterization.ddim_step(
        prediction_type, sample, model_output, level.alpha, level.sigma, prev.alpha, prev.sigma, clip
    )


def x_target(sample: torch.Tensor, sample_after: torch.Tensor, level: Level, after: Level) -> torch.Tensor:
    """The x the student must predict at z_t so that its one DDIM step lands on the teacher's z_t'' (Alg. 2, l. 12).

    x_tilde = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t): the x_hat for
    which z_t'' = alpha_t'' x_hat + sigma_t'' (z_t - alpha_t x_hat) / sigma_t, DDIM's step with eps_hat consistent
    with x_hat.
    """
    ratio = after.sigma / level.sigma
    return (sample_after - ratio * sample) / (after.alpha - ratio * level.alpha)


def truncated_snr_weight(level: Level) -> torch.Tensor:
    """max(SNR(t), 1) with SNR = alpha^2 / sigma^2: the 'truncated SNR' loss weight of section 4."""
    return torch.clamp(level.alpha**2 / level.sigma**2, min=1.0)


def distillation_loss(
    prediction_type: str, sample: torch.Tensor, model_output: torch.Tensor, target_x0: torch.Tensor, level: Level
) -> torch.Tensor:
    """Mean over the batch of the student's loss against x_tilde (Alg. 2, line 13), in float32 (see the module doc).

    v_prediction and sample: max(SNR, 1) ||x_tilde - x_hat_theta(z_t)||^2; epsilon: ||eps_tilde - eps_theta(z_t)||^2.
    """
    sample, model_output, target_x0 = sample.float(), model_output.float(), target_x0.float()
    if prediction_type == "epsilon":
        target_eps = (sample - level.alpha * target_x0) / level.sigma
        return mean_square(model_output, target_eps).mean()
    per_image = mean_square(predicted_x0(prediction_type, sample, model_output, level), target_x0)
    return (truncated_snr_weight(level).reshape(-1).float() * per_image).mean()


def mean_square(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean square difference of two batches."""
    return (a - b).pow(2).mean(dim=tuple(range(1, a.ndim)))


def clipped_x_target(
    sample: torch.Tensor,
    sample_after: torch.Tensor,
    level: Level,
    after: Level,
    clip: float,
    reference: torch.Tensor,
) -> torch.Tensor:
    """The unclipped x_hat whose DDIM step *with x_0 clipping* lands on z_t'' (the sampler the student runs).

    diffusers' `DDIMScheduler.step` with `clip_sample` clamps x_hat but keeps eps_hat = (z_t - alpha_t x_hat) /
    sigma_t unclipped, so that its step is z_t'' = r z_t + alpha_t'' clamp(x_hat) - r alpha_t x_hat, r = sigma_t'' /
    sigma_t. Per pixel it has up to three solutions: x_tilde itself when |x_tilde| <= clip, and one on each clipped
    side, x_hat = (r z_t +- alpha_t'' clip - z_t'') / (r alpha_t) when it is beyond +-clip; at least one exists.
    Where several do, the one nearest `reference` (the teacher's own unclipped x_hat at z_t) is taken.
    """
    ratio = after.sigma / level.sigma
    inside = x_target(sample, sample_after, level, after)
    candidates, valid = [inside], [inside.abs() <= clip]
    slope = ratio * level.alpha
    safe = torch.where(slope > 0, slope, torch.ones_like(slope))
    for side in (clip, -clip):
        x_hat = (ratio * sample + after.alpha * side - sample_after) / safe
        valid.append((slope > 0) & (x_hat * side >= clip * clip))
        candidates.append(x_hat)
    best, best_distance = inside, torch.full_like(inside, float("inf"))
    for x_hat, ok in zip(candidates, valid):
        distance = torch.where(ok, (x_hat - reference).abs(), torch.full_like(x_hat, float("inf")))
        best = torch.where(distance < best_distance, x_hat, best)
        best_distance = torch.minimum(distance, best_distance)
    return best
