# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""Learned variances (Improved DDPM, Nichol & Dhariwal 2021, Sec. 3.1): what the extra output channels mean.

A UNet with twice the sample's output channels predicts, besides eps, v or x_0 in its first half, a value per pixel in
its second half that sets the variance of the reverse step p(x_t-1 | x_t) between the two fixed choices of DDPM,
the posterior variance beta~_t and beta_t, by interpolating their logarithms (eq. 15):

    Sigma_theta(x_t, t) = exp(f log beta_t + (1 - f) log beta~_t),   f = (output + 1) / 2

so an output of -1 is beta~_t ("fixed_small"), +1 is beta_t ("fixed_large"). diffusers' `DDPMScheduler` calls this
`variance_type="learned_range"` and steps it; every other sampler takes the first half (the mean's prediction) only.

Shipped beside the weights with the other `pipeline*.py` files (torch only).
"""

from __future__ import annotations

import torch

# The scheduler `variance_type`s whose variance comes from the model output (diffusers' DDPMScheduler steps both;
# ddpm-hub trains "learned_range").
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")


def split_variance(model_output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prediction, variance values or None) of a model output for samples of `channels` channels."""
    if model_output.shape[1] == 2 * channels:
        prediction, variance_values = model_output.split(channels, dim=1)
        return prediction, variance_values
    if model_output.shape[1] != channels:
        raise ValueError(
            f"The model output has {model_output.shape[1]} channels for samples of {channels}: expected {channels}, "
            f"or {2 * channels} with learned variances."
        )
    return model_output, None


def learned_range_log_variance(
    variance_values: torch.Tensor, min_log: torch.Tensor, max_log: torch.Tensor
) -> torch.Tensor:
    """log Sigma_theta = f log beta_t + (1 - f) log beta~_t with f = (output + 1) / 2 (Nichol & Dhariwal 2021, eq. 15);
    `min_log` is log beta~_t, `max_log` log beta_t (tensors that broadcast over the batch)."""
    fraction = (variance_values + 1) / 2
    return fraction * max_log + (1 - fraction) * min_log


def guide(unconditional: torch.Tensor, conditional: torch.Tensor, scale: float, channels: int) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6) of a model output with `channels` prediction channels.

    The prediction is extrapolated, out_null + s (out_class - out_null); learned variance channels, which guidance does
    not define, are the conditional model's own (as GLIDE samples a guided model with learned variances).
    """
    prediction = unconditional[:, :channels] + scale * (conditional[:, :channels] - unconditional[:, :channels])
    if conditional.shape[1] == channels:
        return prediction
    return torch.cat([prediction, conditional[:, channels:]], dim=1)
