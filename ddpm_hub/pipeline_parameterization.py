# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""What a model's output means: epsilon, v and sample (x_0) prediction, and the deterministic DDIM update.

One place for the parameterization, used by the pipeline's device steps and trajectories (`pipeline_steps.py`,
`pipeline.py`), editing (`pipeline_editing.py`) and progressive distillation's targets. Shipped beside the weights
with the other `pipeline*.py` files (torch only).

Notation: x_t = alpha_t x_0 + sigma_t eps with alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t) (DDPM,
Ho et al. 2020, eq. 4). A model predicts eps (eq. 15 gives x_0 from it), v = alpha_t eps - sigma_t x_0 (Salimans &
Ho 2022, Sec. 4), or x_0 itself ("sample"). Each of x_0 and eps is affine in (x_t, model output) at a fixed level: the
`*_coefficients` functions give those two numbers (for step tables built once), the `predicted_*` functions apply
them to tensors (alpha and sigma may be floats or tensors that broadcast over the batch).
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _check(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"Unknown prediction type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}.")


def x0_coefficients(prediction_type: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(a, b) with x_0 = a x_t + b m for a model output m."""
    _check(prediction_type)
    if prediction_type == "epsilon":
        return 1 / alpha, -sigma / alpha
    if prediction_type == "v_prediction":
        return alpha, -sigma
    return 0.0, 1.0


def eps_coefficients(prediction_type: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(a, b) with eps = a x_t + b m for a model output m."""
    _check(prediction_type)
    if prediction_type == "epsilon":
        return 0.0, 1.0
    if prediction_type == "v_prediction":
        return sigma, alpha
    return 1 / sigma, -alpha / sigma


def predicted_x0(prediction_type: str, sample: torch.Tensor, model_output: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """x_0 from a model output at x_t = `sample`: eps (DDPM eq. 15), v (Salimans & Ho 2022, eq. 11) or x_0 itself."""
    _check(prediction_type)
    if prediction_type == "epsilon":
        return (sample - sigma * model_output) / alpha
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * model_output
    return model_output


def predicted_eps(prediction_type: str, sample: torch.Tensor, model_output: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """eps from a model output at x_t = `sample` (what diffusers' schedulers take, from the unclipped prediction)."""
    _check(prediction_type)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return sigma * sample + alpha * model_output
    return (sample - alpha * model_output) / sigma


def model_output_from(prediction_type: str, pred_original: torch.Tensor, pred_epsilon: torch.Tensor, alpha, sigma):
    """The model output that means (x_0, eps) at a level: eps, v = alpha eps - sigma x_0, or x_0."""
    _check(prediction_type)
    if prediction_type == "epsilon":
        return pred_epsilon
    if prediction_type == "v_prediction":
        return alpha * pred_epsilon - sigma * pred_original
    return pred_original


def split_prediction(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_0, eps) from a model output at a step with alpha_bar_t (a tensor), in the variance-preserving scale."""
    alpha, sigma = alpha_prod_t.sqrt(), (1 - alpha_prod_t).sqrt()
    return (
        predicted_x0(prediction_type, sample, model_output, alpha, sigma),
        predicted_eps(prediction_type, sample, model_output, alpha, sigma),
    )


def ddim_update(pred_original: torch.Tensor, pred_epsilon: torch.Tensor, alpha_prev, sigma_prev) -> torch.Tensor:
    """DDIM's update (Song et al. 2021, eq. 12, eta = 0): x_s = alpha_s x_0 + sigma_s eps.

    With eta > 0 the caller passes sigma_prev = sqrt(1 - alpha_bar_s - std_s^2) and adds std_s z itself.
    """
    return alpha_prev * pred_original + sigma_prev * pred_epsilon


def ddim_step(
    prediction_type: str,
    sample: torch.Tensor,
    model_output: torch.Tensor,
    alpha,
    sigma,
    alpha_prev,
    sigma_prev,
    clip: float | None = None,
) -> torch.Tensor:
    """One deterministic DDIM step x_t -> x_s from a model output, as diffusers' `DDIMScheduler.step` with eta = 0:
    x_0 is clipped to [-clip, clip] when `clip` is given, eps comes from the unclipped prediction."""
    pred_original = predicted_x0(prediction_type, sample, model_output, alpha, sigma)
    pred_epsilon = predicted_eps(prediction_type, sample, model_output, alpha, sigma)
    if clip is not None:
        pred_original = pred_original.clamp(-clip, clip)
    return ddim_update(pred_original, pred_epsilon, alpha_prev, sigma_prev)
