"""What to train, decided before anything heavy happens: the UNet config and the noise schedule (`plan_model`)."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers import DDPMScheduler, UNet2DModel

from ..choices import BETA_SCHEDULES
from ..config import ModelConfig
from ..defaults import resolve_model_defaults
from ..models import check_resolution, resolve_spec
from ..safe_loading import check_local_model, weights_kwargs
from ..schedules import make_noise_scheduler


@dataclass
class ModelPlan:
    """The UNet to build and the noise schedule to train it with, decided before anything heavy happens."""

    unet_config: dict[str, Any]
    noise_scheduler: DDPMScheduler
    resolution: int
    description: str
    pretrained: str | None = None
    learning_rate: float = 1e-4  # used when --learning_rate is not given

    def condition_on(self, num_classes: int) -> None:
        """Give a new UNet one class embedding per class plus the null class; a pretrained one must match already."""
        num_class_embeds = num_classes + 1 if num_classes else None
        if self.pretrained is None:
            self.unet_config["num_class_embeds"] = num_class_embeds
            return
        have = self.unet_config.get("num_class_embeds")
        if have != num_class_embeds:

            def classes(n: int | None) -> str:
                return f"{n - 1} classes" if n else "no classes (unconditional)"

            raise ValueError(
                f"--pretrained_model_name_or_path {self.pretrained!r} has {classes(have)}, the training data "
                f"{classes(num_class_embeds)}; fine-tune on data with the same classes."
            )

    def build(self, cache_dir: str | None = None) -> UNet2DModel:
        if self.pretrained is None:
            return UNet2DModel.from_config(self.unet_config)
        unet = UNet2DModel.from_pretrained(
            self.pretrained, subfolder=_unet_subfolder(self.pretrained), cache_dir=cache_dir, **weights_kwargs()
        )
        unet.register_to_config(sample_size=self.resolution)
        return unet


def _unet_subfolder(path: str) -> str | None:
    # A pipeline (folder or Hub repo) keeps its UNet in unet/; a bare model folder does not.
    local = Path(path)
    if local.is_dir():
        return "unet" if (local / "unet").is_dir() else None
    return "unet"


def _check_resolution(unet_config: dict[str, Any], resolution: int) -> None:
    levels = unet_config.get(
        "block_out_channels", inspect.signature(UNet2DModel.__init__).parameters["block_out_channels"].default
    )
    check_resolution(resolution, len(levels))


def plan_model(config: ModelConfig, cache_dir: str | None = None) -> ModelPlan:
    """Resolve --model / --model_config_name_or_path / --pretrained_model_name_or_path and the schedule flags."""
    config = resolve_model_defaults(config, cache_dir)  # a no-op when the Trainer resolved them already
    if config.pretrained_model_name_or_path is not None:
        return _pretrained_plan(config, cache_dir)
    noise_scheduler = make_noise_scheduler(
        config.ddpm_beta_schedule,
        config.ddpm_num_steps,
        config.prediction_type,
        rescale_betas_zero_snr=config.rescale_betas_zero_snr,
    )
    if config.model_config_name_or_path is not None:
        source = config.model_config_name_or_path
        path = Path(source)
        try:
            if path.is_file():
                unet_config = json.loads(path.read_text(encoding="utf-8"))
            else:
                unet_config = dict(
                    UNet2DModel.load_config(source, subfolder=_unet_subfolder(source), cache_dir=cache_dir)
                )
        except (OSError, ValueError) as error:
            raise ValueError(f"--model_config_name_or_path {source!r} is not a UNet2DModel config: {error}") from error
        resolution = config.resolution or unet_config.get("sample_size") or 64
        _check_resolution(unet_config, resolution)
        unet_config["sample_size"] = resolution
        return ModelPlan(unet_config, noise_scheduler, resolution, f"config {source}")

    spec = resolve_spec(
        config.model,
        config.resolution,
        model_channels=config.model_channels,
        channel_mult=config.channel_mult,
        num_res_blocks=config.num_res_blocks,
        attention_resolutions=config.attention_resolutions,
        dropout=config.dropout,
    )
    return ModelPlan(
        spec.unet_kwargs(), noise_scheduler, spec.resolution, f"preset {config.model}", learning_rate=spec.learning_rate
    )


def _pretrained_plan(config: ModelConfig, cache_dir: str | None) -> ModelPlan:
    """Fine-tuning: the pretrained UNet's config, and its scheduler unless the flags ask for a new schedule."""
    source = config.pretrained_model_name_or_path
    check_local_model(source, "--pretrained_model_name_or_path")
    try:
        unet_config = dict(UNet2DModel.load_config(source, subfolder=_unet_subfolder(source), cache_dir=cache_dir))
        scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler", cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        raise ValueError(f"--pretrained_model_name_or_path {source!r} is not a loadable pipeline: {error}") from error
    pretrained = DDPMScheduler.from_config(scheduler_config).config
    new_schedule = (
        BETA_SCHEDULES.get(config.ddpm_beta_schedule, config.ddpm_beta_schedule) != pretrained.beta_schedule
        or config.ddpm_num_steps != pretrained.num_train_timesteps
        or config.rescale_betas_zero_snr
    )
    if new_schedule:
        # A new noise schedule: built like a fresh one, keeping the pretrained scheduler's other settings.
        kept = {
            k: pretrained[k] for k in ("beta_start", "beta_end", "variance_type", "clip_sample", "timestep_spacing")
        }
        noise_scheduler = make_noise_scheduler(
            config.ddpm_beta_schedule,
            config.ddpm_num_steps,
            config.prediction_type,
            rescale_betas_zero_snr=config.rescale_betas_zero_snr or pretrained.rescale_betas_zero_snr,
            **kept,
        )
    else:
        noise_scheduler = DDPMScheduler.from_config(scheduler_config, prediction_type=config.prediction_type)
    resolution = config.resolution or unet_config["sample_size"]
    _check_resolution(unet_config, resolution)
    return ModelPlan(unet_config, noise_scheduler, resolution, f"fine-tuned from {source}", pretrained=source)
