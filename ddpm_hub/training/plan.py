"""What to train, decided once before anything heavy happens: the UNet config and the noise schedule (`plan_model`).

The plan is built from the model flags (a preset, a UNet config, or a pretrained pipeline to fine-tune) and the
`ModelShape` the run's parts ask for (latent channels and grid, learned variances, conditioning inputs, a
student's timestep spacing), then frozen. The data's classes are the one input known only once the data is open:
`ModelPlan.build(num_classes)` takes them when it builds the UNet.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffusers import DDPMScheduler, UNet2DModel

from ..choices import BETA_SCHEDULES
from ..config import ModelConfig
from ..models import check_resolution, resolve_spec
from ..safe_loading import check_local_model, weights_kwargs
from ..schedules import make_noise_scheduler


@dataclass(frozen=True)
class ModelShape:
    """What a run's parts ask of the UNet and its schedule (`RunPart.shape_model`): inputs of the plan.

    Args:
        sample_size (`int`, *optional*): the UNet's sample side (`--resolution`; a latent run's latent grid); `None`
            keeps the model's own.
        sample_channels (`int`, *optional*): channels of one training sample as the UNet sees it (3 for RGB
            pixels, a VAE's latent channels); `None` keeps the model's own.
        condition_channels (`int`, defaults to 0): input channels concatenated after x_t (a low-resolution image).
        output_multiple (`int`, defaults to 1): output channels per sample channel (2 with learned variances).
        class_embed_type (`str`, *optional*): diffusers' `class_embed_type` (e.g. `"timestep"` for a continuous
            level); `None` keeps the plain class-id embedding of conditional models.
        scheduler_overrides (`dict`): changes to the training scheduler's config (`variance_type`, spacing).
        notes (`tuple[str, ...]`): why the channels are what they are, for a one-line refusal ("the latents of the
            VAE X have 4 channels").
    """

    sample_size: int | None = None
    sample_channels: int | None = None
    condition_channels: int = 0
    output_multiple: int = 1
    class_embed_type: str | None = None
    scheduler_overrides: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> ModelShape:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelPlan:
    """The UNet to build and the noise schedule to train it with (frozen).

    Args:
        unet_config (`Mapping`): the UNet's config, without the class embedding (`build` adds the data's classes).
        scheduler_config (`Mapping`): the training `DDPMScheduler`'s config.
        resolution (`int`): the UNet's sample side (a latent run's latent grid).
        description (`str`): where the model comes from ("preset small", "fine-tuned from ...").
        sample_channels (`int`): channels of one training sample (what a pixel model's images are decoded to).
        pretrained (`str`, *optional*): the pipeline a fine-tuning run starts from.
        learning_rate (`float`): used when --learning_rate is not given (a preset's own).
    """

    unet_config: Mapping[str, Any]
    scheduler_config: Mapping[str, Any]
    resolution: int
    description: str
    sample_channels: int = 3
    pretrained: str | None = None
    learning_rate: float = 1e-4

    def noise_scheduler(self) -> DDPMScheduler:
        """A fresh training scheduler (the plan itself never changes)."""
        return DDPMScheduler.from_config(dict(self.scheduler_config))

    def conditioned_config(self, num_classes: int) -> dict[str, Any]:
        """The UNet config for data with `num_classes` classes (0: unconditional): a new UNet gets one class
        embedding per class plus the null class; a pretrained one must have them already."""
        num_class_embeds = num_classes + 1 if num_classes else None
        config = dict(self.unet_config)
        if self.pretrained is None:
            return {**config, "num_class_embeds": num_class_embeds} if num_class_embeds else config
        have = config.get("num_class_embeds")
        if have != num_class_embeds:

            def classes(n: int | None) -> str:
                return f"{n - 1} classes" if n else "no classes (unconditional)"

            raise ValueError(
                f"--pretrained_model_name_or_path {self.pretrained!r} has {classes(have)}, the training data "
                f"{classes(num_class_embeds)}; fine-tune on data with the same classes."
            )
        return config

    def build(self, num_classes: int = 0, cache_dir: str | None = None) -> UNet2DModel:
        """The UNet, new or pretrained, for data with `num_classes` classes."""
        config = self.conditioned_config(num_classes)
        if self.pretrained is None:
            return UNet2DModel.from_config(config)
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


def _check_resolution(unet_config: Mapping[str, Any], resolution: int) -> None:
    levels = unet_config.get(
        "block_out_channels", inspect.signature(UNet2DModel.__init__).parameters["block_out_channels"].default
    )
    check_resolution(resolution, len(levels))


def plan_model(config: ModelConfig, cache_dir: str | None = None, shape: ModelShape | None = None) -> ModelPlan:
    """The plan of --model / --model_config_name_or_path / --pretrained_model_name_or_path with the schedule flags
    (already resolved: `ddpm_hub.defaults.resolve_defaults`), shaped as `shape` asks; `ValueError` in one sentence
    for a model that cannot take that shape."""
    shape = shape or ModelShape(sample_size=config.resolution)
    if config.pretrained_model_name_or_path is not None:
        return _pretrained_plan(config, shape, cache_dir)
    scheduler = make_noise_scheduler(
        config.ddpm_beta_schedule,
        config.ddpm_num_steps,
        config.prediction_type,
        rescale_betas_zero_snr=config.rescale_betas_zero_snr,
    )
    scheduler_config = {**scheduler.config, **shape.scheduler_overrides}
    if config.model_config_name_or_path is not None:
        source = config.model_config_name_or_path
        unet_config = _read_unet_config(source, cache_dir)
        resolution = shape.sample_size or unet_config.get("sample_size") or 64
        channels = _check_shape(unet_config, shape, f"--model_config_name_or_path {source!r}")
        _check_resolution(unet_config, resolution)
        unet_config["sample_size"] = resolution
        return _frozen(ModelPlan(unet_config, scheduler_config, resolution, f"config {source}", channels))
    spec = resolve_spec(
        config.model,
        shape.sample_size,
        model_channels=config.model_channels,
        channel_mult=config.channel_mult,
        num_res_blocks=config.num_res_blocks,
        attention_resolutions=config.attention_resolutions,
        dropout=config.dropout,
        in_channels=shape.sample_channels,
    )
    unet_config = spec.unet_kwargs()
    channels = unet_config["in_channels"]
    unet_config.update(in_channels=channels + shape.condition_channels, out_channels=channels * shape.output_multiple)
    if shape.class_embed_type is not None:
        unet_config["class_embed_type"] = shape.class_embed_type
    description = f"preset {config.model}"
    return _frozen(ModelPlan(unet_config, scheduler_config, spec.resolution, description, channels,
                             learning_rate=spec.learning_rate))  # fmt: skip


def _read_unet_config(source: str, cache_dir: str | None) -> dict[str, Any]:
    try:
        if Path(source).is_file():
            return json.loads(Path(source).read_text(encoding="utf-8"))
        return dict(UNet2DModel.load_config(source, subfolder=_unet_subfolder(source), cache_dir=cache_dir))
    except (OSError, ValueError) as error:
        raise ValueError(f"--model_config_name_or_path {source!r} is not a UNet2DModel config: {error}") from error


def _check_shape(unet_config: Mapping[str, Any], shape: ModelShape, origin: str) -> int:
    """A given UNet (a config file, a pretrained model) must already have the channels the run's parts need;
    returns its sample channels."""
    have = (unet_config.get("in_channels", 3), unet_config.get("out_channels", 3))
    channels = shape.sample_channels or have[0] - shape.condition_channels
    want = (channels + shape.condition_channels, channels * shape.output_multiple)
    if have != want:
        reason = " and ".join(shape.notes) or f"this run needs {want[0]}/{want[1]}"
        raise ValueError(
            f"{origin} has in/out channels {have[0]}/{have[1]}, but {reason}; use a UNet config with "
            f"in_channels={want[0]} and out_channels={want[1]}, or a --model preset."
        )
    if shape.class_embed_type is not None and unet_config.get("class_embed_type") != shape.class_embed_type:
        raise ValueError(
            f"{origin} has class_embed_type {unet_config.get('class_embed_type')!r}, but this run needs "
            f"{shape.class_embed_type!r}; use a UNet config with it, or a --model preset."
        )
    return channels


def _frozen(plan: ModelPlan) -> ModelPlan:
    """The plan with read-only configs."""
    return dataclasses.replace(
        plan,
        unet_config=types.MappingProxyType(dict(plan.unet_config)),
        scheduler_config=types.MappingProxyType(dict(plan.scheduler_config)),
    )


def _pretrained_plan(config: ModelConfig, shape: ModelShape, cache_dir: str | None) -> ModelPlan:
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
        scheduler = make_noise_scheduler(
            config.ddpm_beta_schedule,
            config.ddpm_num_steps,
            config.prediction_type,
            rescale_betas_zero_snr=config.rescale_betas_zero_snr or pretrained.rescale_betas_zero_snr,
            **kept,
        )
    else:
        scheduler = DDPMScheduler.from_config(scheduler_config, prediction_type=config.prediction_type)
    channels = _check_shape(unet_config, shape, f"--pretrained_model_name_or_path {source!r}")
    resolution = shape.sample_size or unet_config["sample_size"]
    _check_resolution(unet_config, resolution)
    plan = ModelPlan(
        unet_config, {**scheduler.config, **shape.scheduler_overrides}, resolution, f"fine-tuned from {source}",
        channels, pretrained=source,
    )  # fmt: skip
    return _frozen(plan)
