"""The DDPM training loss: MSE to the target the UNet is asked to predict, optionally Min-SNR weighted."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr


def diffusion_loss(
    model_output: torch.Tensor,
    clean_images: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    noise_scheduler: DDPMScheduler,
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """Mean loss over the batch for x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

    - epsilon: ||eps_theta - eps||^2, Ho et al. 2020, eq. 14 ("L_simple").
    - v_prediction: ||v_theta - v||^2 with v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0, Salimans & Ho 2022.
    - sample: ||x_theta - x_0||^2 weighted by SNR(t), which makes it the epsilon loss in x_0 units, as diffusers'
      example script does.

    With `snr_gamma`, each timestep is weighted by min(SNR(t), gamma) expressed for the prediction target
    (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 8 and Table 1).
    """
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(clean_images, noise, timesteps)
    elif prediction_type == "sample":
        target = clean_images
    else:
        raise ValueError(f"Unknown prediction type {prediction_type!r}.")
    # The loss is computed in float32 whatever the autocast dtype: half-precision squares underflow.
    per_image = F.mse_loss(model_output.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))

    if snr_gamma is None and prediction_type != "sample":
        return per_image.mean()
    snr = compute_snr(noise_scheduler, timesteps).float()
    if snr_gamma is None:
        weights = snr
    else:
        clipped = snr.clamp(max=snr_gamma)
        if prediction_type == "epsilon":
            weights = clipped / snr
        elif prediction_type == "v_prediction":
            weights = clipped / (snr + 1)
        else:
            weights = clipped
        # Zero terminal SNR: eps carries no information at t = T; keep its plain weight instead of 0/0.
        weights = torch.where(snr == 0, torch.ones_like(weights), weights)
    return (per_image * weights).mean()
