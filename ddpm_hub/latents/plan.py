"""Fitting the UNet to the latents: its sample size and channels follow the VAE, checked before heavy work."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .vae import VAEInfo, check_unet_channels


def plan_latent_model(model_config, info: VAEInfo, plan_model: Callable[..., Any], cache_dir: str | None = None):
    """The `ModelPlan` of a latent run and its image resolution in pixels.

    `--resolution` is the image size: the UNet's sample size is `resolution / factor`. Without it, the preset's (or
    UNet config's) own sample size is read as the latent grid (the `ldm-churches-8` preset: 32, i.e. 256 px with an
    f8 VAE). A preset gets the latents' channels; a UNet config or pretrained UNet must have them already.
    """
    if model_config.resolution is not None:
        latent_size = info.latent_size(model_config.resolution)
        plan = plan_model(dataclasses.replace(model_config, resolution=latent_size), cache_dir)
    else:
        plan = plan_model(model_config, cache_dir)
    if model_config.pretrained_model_name_or_path is not None:
        check_unet_channels(
            plan.unet_config, info, f"--pretrained_model_name_or_path {model_config.pretrained_model_name_or_path!r}"
        )
    elif model_config.model_config_name_or_path is not None:
        check_unet_channels(
            plan.unet_config, info, f"--model_config_name_or_path {model_config.model_config_name_or_path!r}"
        )
    else:
        channels = info.latent_channels
        plan.unet_config.update(in_channels=channels, out_channels=channels)
    return plan, plan.resolution * info.factor
