"""ddpm-hub: train unconditional DDPM image models with accelerate, share them on the Hub, generate images."""

from __future__ import annotations

__version__ = "0.1.0"

from .models import PRESETS, UNetSpec, build_unet, get_preset, resolve_spec
from .pipeline import SAMPLERS, DDPMHubPipeline, DDPMHubPipelineOutput, scheduler_from_name
from .schedules import BETA_SCHEDULES, ScheduleCurves, make_noise_scheduler, plot_schedules, schedule_curves

__all__ = [
    "BETA_SCHEDULES",
    "DDPMHubPipeline",
    "DDPMHubPipelineOutput",
    "PRESETS",
    "SAMPLERS",
    "ScheduleCurves",
    "Text2Image",
    "UNetSpec",
    "build_unet",
    "get_preset",
    "make_noise_scheduler",
    "plot_schedules",
    "resolve_spec",
    "schedule_curves",
    "scheduler_from_name",
]


def __getattr__(name: str):
    # Text-to-image pulls in transformers' CLIP stack; load it only when asked for.
    if name == "Text2Image":
        from .text2img import Text2Image

        return Text2Image
    raise AttributeError(f"module 'ddpm_hub' has no attribute {name!r}")
