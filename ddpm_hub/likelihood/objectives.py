"""Training objectives with the variational bound (Nichol & Dhariwal 2021, Sec. 3.1 and 3.3).

    L_simple = E ||target - prediction||^2                   (DDPM eq. 14; `ddpm_hub.loss.diffusion_loss`)
    L_hybrid = L_simple + lambda L_vlb,  lambda = 0.001         (eq. 16), the mean's gradient stopped in L_vlb
    L_vlb    = E_{t ~ p_t} [L_t / p_t]                          (eq. 18, importance-sampled t)

L_vlb is estimated from one timestep per image, as T L_t (uniform t, 1 / p_t = T) or L_t / p_t, in bits per
dimension: the bound's terms without its constant prior term. In L_hybrid the bound only trains the variance: the
prediction (which sets the mean) enters it detached, so the mean learns from L_simple alone, as the paper does.
"""

from __future__ import annotations

import torch

from ..pipeline_variance import split_variance
from .bound import vb_terms_bits
from .process import DiffusionProcess

LOSS_TYPES = ("simple", "hybrid", "vlb")  # the choices of --loss_type
HYBRID_VLB_WEIGHT = 0.001  # lambda of eq. 16


def bound_term(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    process: DiffusionProcess,
    prediction_type: str,
    variance_type: str,
    *,
    stop_mean_gradient: bool,
    decoder: str = "discretized",
) -> torch.Tensor:
    """L_t per image in bits per dimension at the training `timesteps` (`process` is the whole training schedule).

    With `stop_mean_gradient` the prediction is detached, so that only the variance channels get a gradient (the
    hybrid objective). Computed in float32 whatever the autocast dtype.
    """
    model_output, x0, x_t = model_output.float(), x0.float(), x_t.float()
    if stop_mean_gradient:
        prediction, variance_values = split_variance(model_output, x_t.shape[1])
        frozen = prediction.detach()
        model_output = frozen if variance_values is None else torch.cat([frozen, variance_values], dim=1)
    return vb_terms_bits(process, timesteps, x0, x_t, model_output, prediction_type, variance_type, decoder=decoder)


def hybrid_loss(
    simple_loss: torch.Tensor, bound_terms: torch.Tensor, num_timesteps: int, vlb_weight: float = HYBRID_VLB_WEIGHT
) -> torch.Tensor:
    """L_simple + lambda L_vlb (eq. 16) with L_vlb estimated as T times the batch's mean L_t (uniform timesteps)."""
    return simple_loss + vlb_weight * num_timesteps * bound_terms.mean()


def vlb_loss(bound_terms: torch.Tensor, importance_weights: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """L_vlb (eq. 18) from importance-sampled timesteps: T times the batch's mean of L_t / (T p_t)."""
    return num_timesteps * (importance_weights * bound_terms).mean()
