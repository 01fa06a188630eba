"""ddpm-hub: train unconditional DDPM image models with accelerate, share them on the Hub, generate images.

The names below load their modules when first used, so that `import ddpm_hub.config` (and every `--help`) stays
free of torch, diffusers and transformers.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "PRESETS": "models",
    "UNetSpec": "models",
    "build_unet": "models",
    "get_preset": "models",
    "resolve_spec": "models",
    "SAMPLERS": "pipeline",
    "DDPMHubPipeline": "pipeline",
    "DDPMHubPipelineOutput": "pipeline",
    "scheduler_from_name": "pipeline",
    "BETA_SCHEDULES": "schedules",
    "ScheduleCurves": "schedules",
    "make_noise_scheduler": "schedules",
    "plot_schedules": "schedules",
    "schedule_curves": "schedules",
    "Text2Image": "text2img",  # pulls in transformers' CLIP stack
    "DDPMHubCascade": "superres",
}

__all__ = sorted(_EXPORTS, key=lambda name: (not name.isupper(), name))


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ddpm_hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
