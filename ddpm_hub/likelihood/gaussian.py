"""Gaussian densities the variational bound is made of: the KL of two diagonal Gaussians, the discretized Gaussian
likelihood of 8-bit images and the Gaussian log density of continuous data. All elementwise, in nats."""

from __future__ import annotations

import math

import torch

# 8-bit images scaled to [-1, 1]: value k / 127.5 - 1 for k = 0..255, so each bin is 2 / 255 wide.
BIN_WIDTH = 2.0 / 255.0


def normal_kl(mean1, log_variance1, mean2, log_variance2) -> torch.Tensor:
    """KL(N(mean1, exp(log_variance1)) || N(mean2, exp(log_variance2))) per element, in nats (broadcasting).

    KL = 1/2 (log s2 - log s1 + s1 / s2 + (m1 - m2)^2 / s2 - 1), with s the variances.
    """
    return 0.5 * (
        log_variance2
        - log_variance1
        + torch.exp(log_variance1 - log_variance2)
        + (mean1 - mean2) ** 2 * torch.exp(-log_variance2)
        - 1.0
    )


def _log_normal_interval(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """log (Phi(upper) - Phi(lower)) for upper > lower, accurate in both tails.

    An interval in the upper tail is mirrored into the lower one (Phi(u) - Phi(l) = Phi(-l) - Phi(-u)), where
    log Phi is accurate; then log(Phi(u) - Phi(l)) = log Phi(u) + log(1 - exp(log Phi(l) - log Phi(u))).
    """
    mirrored = lower > 0
    upper, lower = torch.where(mirrored, -lower, upper), torch.where(mirrored, -upper, lower)
    log_upper, log_lower = torch.special.log_ndtr(upper), torch.special.log_ndtr(lower)
    # Clamped only where the bin's mass underflows (a variance so large that the bin has none in float32), so that
    # the logarithm and its gradient stay finite.
    mass = (-torch.expm1(log_lower - log_upper)).clamp(min=torch.finfo(upper.dtype).tiny)
    return log_upper + torch.log(mass)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x's 8-bit bin) under N(mean, exp(log_scale)^2), per element, in nats (Ho et al. 2020, eq. 13).

    `x` holds 8-bit values scaled to [-1, 1]; the bin of a value is [x - 1/255, x + 1/255], except that the first
    bin reaches down to -inf and the last up to +inf, so the 256 probabilities sum to 1. The exact normal CDF is used
    (`torch.special.log_ndtr`), in log space.
    """
    inverse_scale = torch.exp(-log_scale)
    upper = (x - mean + BIN_WIDTH / 2) * inverse_scale
    lower = (x - mean - BIN_WIDTH / 2) * inverse_scale
    first_bin = torch.special.log_ndtr(upper)  # P(X < x + 1/255)
    last_bin = torch.special.log_ndtr(-lower)  # P(X > x - 1/255)
    middle = _log_normal_interval(upper, lower)
    return torch.where(x < -0.999, first_bin, torch.where(x > 0.999, last_bin, middle))


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_scale)^2) per element, in nats: the decoder of continuous data (latents)."""
    return -0.5 * (math.log(2 * math.pi) + 2 * log_scale + ((x - mean) * torch.exp(-log_scale)) ** 2)
