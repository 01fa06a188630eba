"""Likelihood of a diffusion model: the variational bound in bits per dimension, and the training objectives built
on it (Improved DDPM, Nichol & Dhariwal 2021).

- `gaussian.py`: the Gaussian KL, the discretized Gaussian likelihood of 8-bit pixels, the Gaussian density.
- `process.py`: the diffusion process's tables, for the training schedule or a respaced subset of it.
- `bound.py`: the bound's terms (L_0 decoder, L_t KL, L_T prior) and the whole bound of a batch.
- `objectives.py`: the hybrid and vlb losses; `timestep_sampler.py`: importance sampling of timesteps for L_vlb.
- `nll.py`: the bits per dimension of images under a `DDPMHubPipeline` (`ddpm-hub eval --metrics nll`).

The learned-range variance itself (eq. 15) lives beside the pipeline, in `ddpm_hub/pipeline_variance.py`, which
travels with the weights.
"""

from __future__ import annotations

from .bound import BitsPerDim, bits_per_dim, prior_bits, reverse_step, vb_terms_bits
from .gaussian import discretized_gaussian_log_likelihood, gaussian_log_density, normal_kl
from .nll import NegativeLogLikelihood, bound_variance_type, negative_log_likelihood
from .objectives import HYBRID_VLB_WEIGHT, LOSS_TYPES, BoundObjective, bound_term, hybrid_loss, vlb_loss
from .process import VARIANCE_TYPES, DiffusionProcess, bound_variance
from .timestep_sampler import LossSecondMomentSampler

__all__ = [
    "HYBRID_VLB_WEIGHT",
    "LOSS_TYPES",
    "VARIANCE_TYPES",
    "BitsPerDim",
    "BoundObjective",
    "DiffusionProcess",
    "LossSecondMomentSampler",
    "NegativeLogLikelihood",
    "bits_per_dim",
    "bound_term",
    "bound_variance",
    "bound_variance_type",
    "discretized_gaussian_log_likelihood",
    "gaussian_log_density",
    "hybrid_loss",
    "negative_log_likelihood",
    "normal_kl",
    "prior_bits",
    "reverse_step",
    "vb_terms_bits",
    "vlb_loss",
]
