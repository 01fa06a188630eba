"""The variational bound of a diffusion model in bits per dimension (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021,
Sec. 2 and 3):

    -log p(x_0) <= L_vlb = L_0 + L_1 + ... + L_{N-1} + L_N
    L_0 = -log p_theta(x_0 | x_1)                                   the decoder (8-bit bins, or a density for latents)
    L_i = KL(q(x_{i-1} | x_i, x_0) || p_theta(x_{i-1} | x_i))       for 0 < i < N (written for step i)
    L_N = KL(q(x_N | x_0) || N(0, I))                               the prior term; no model

each term divided by the number of dimensions and by log 2. p_theta(x_{i-1} | x_i) = N(mu_theta, Sigma_theta) has the
posterior mean of the model's x_0 (from eps, v or x_0: `pipeline_parameterization`) and the variance of
`DiffusionProcess.log_variance`. Steps are numbered as in `process.py`: step i of a respaced process is the model's
timestep tau_i.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..pipeline_parameterization import predicted_x0
from ..pipeline_variance import split_variance
from .gaussian import discretized_gaussian_log_likelihood, gaussian_log_density, normal_kl
from .process import DiffusionProcess

DECODERS = ("discretized", "continuous")  # 8-bit pixels, or continuous data (latents: a density, not a probability)


def mean_over_dimensions(values: torch.Tensor) -> torch.Tensor:
    """Per-image mean over every dimension but the batch."""
    return values.mean(dim=tuple(range(1, values.ndim)))


def reverse_step(
    process: DiffusionProcess,
    index: torch.Tensor,
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    prediction_type: str,
    variance_type: str,
    clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, log variance, x_0) of p_theta(x_{i-1} | x_i) from the model output at step i (per image).

    The mean is the posterior mean q(x_{i-1} | x_i, x_0) at the model's x_0 (Nichol & Dhariwal 2021, eq. 11-13),
    clipped to [-clip, clip] first when `clip` is given (as the ancestral sampler clips it).
    """
    prediction, variance_values = split_variance(model_output, x_t.shape[1])
    alpha, sigma = process.alpha_sigma(index, x_t.ndim)
    x0 = predicted_x0(prediction_type, x_t, prediction, alpha, sigma)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    mean, _ = process.q_posterior(x0, x_t, index)
    return mean, process.log_variance(index, variance_type, variance_values, x_t.ndim), x0


def vb_terms_bits(
    process: DiffusionProcess,
    index: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    prediction_type: str,
    variance_type: str,
    *,
    clip: float | None = None,
    decoder: str = "discretized",
) -> torch.Tensor:
    """L_i per image in bits per dimension: the decoder's negative log-likelihood of x_0 where i = 0, the KL of the
    true posterior from the model's reverse step elsewhere (`index`: one step per image)."""
    if decoder not in DECODERS:
        raise ValueError(f"Unknown decoder {decoder!r}; choose one of: {', '.join(DECODERS)}.")
    true_mean, true_log_variance = process.q_posterior(x0, x_t, index)
    mean, log_variance, _ = reverse_step(process, index, x_t, model_output, prediction_type, variance_type, clip)
    kl = mean_over_dimensions(normal_kl(true_mean, true_log_variance, mean, log_variance))
    likelihood = discretized_gaussian_log_likelihood if decoder == "discretized" else gaussian_log_density
    decoder_nll = -mean_over_dimensions(likelihood(x0, mean, 0.5 * log_variance))
    return torch.where(index == 0, decoder_nll, kl) / math.log(2.0)


def prior_bits(process: DiffusionProcess, x0: torch.Tensor) -> torch.Tensor:
    """L_N = KL(q(x_N | x_0) || N(0, I)) per image in bits per dimension, at the process's last step."""
    last = torch.full((x0.shape[0],), len(process) - 1, dtype=torch.long, device=x0.device)
    alpha, sigma = process.alpha_sigma(last, x0.ndim)
    kl = normal_kl(alpha * x0, torch.log(sigma**2).expand_as(x0), 0.0, torch.zeros_like(x0))
    return mean_over_dimensions(kl) / math.log(2.0)


@dataclass
class BitsPerDim:
    """The bound of a batch of images, in bits per dimension.

    Args:
        total (`torch.Tensor`): (N,) the whole bound of each image, sum of its terms and its prior term.
        terms (`torch.Tensor`): (N, steps) L_i of each image at each step i (column 0 is the decoder L_0).
        prior (`torch.Tensor`): (N,) L_N, the prior term.
    """

    total: torch.Tensor
    terms: torch.Tensor
    prior: torch.Tensor


# The model as the bound sees it: (x_t, timestep) -> the output (prediction and, if learned, variance channels).
Denoiser = Callable[[torch.Tensor, int], torch.Tensor]


@torch.no_grad()
def bits_per_dim(
    denoiser: Denoiser,
    x0: torch.Tensor,
    process: DiffusionProcess,
    prediction_type: str,
    variance_type: str,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    clip: float | None = None,
    decoder: str = "discretized",
    progress: Callable[[], None] | None = None,
) -> BitsPerDim:
    """The whole bound of the images `x0` (a batch in [-1, 1]) under the model, every step of `process` once.

    As Improved DDPM's `calc_bpd_loop`, from the last step to the first: x_i is drawn from q(x_i | x_0) with fresh
    noise at every step (one draw per image from `generator`, which may be a list of one generator per image, so that
    an image's bound does not depend on the batch it is in). `progress` is called after every step.
    """
    process = process.to(x0.device)
    timesteps = process.timesteps.tolist()
    terms = torch.zeros(x0.shape[0], len(process), device=x0.device)
    for i in reversed(range(len(process))):
        index = torch.full((x0.shape[0],), i, dtype=torch.long, device=x0.device)
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=torch.float32)
        x_t = process.q_sample(x0, index, noise)
        model_output = denoiser(x_t, timesteps[i]).float()
        terms[:, i] = vb_terms_bits(
            process, index, x0, x_t, model_output, prediction_type, variance_type, clip=clip, decoder=decoder
        )
        if progress is not None:
            progress()
    prior = prior_bits(process, x0)
    return BitsPerDim(total=terms.sum(dim=1) + prior, terms=terms, prior=prior)
