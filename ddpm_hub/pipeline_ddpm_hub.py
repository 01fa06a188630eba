# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""A public alias: `from ddpm_hub.pipeline_ddpm_hub import X` for every name of the pipeline's files.

The code lives in the files that travel beside the weights: `ddpm_hub/pipeline.py` (the class),
`ddpm_hub/pipeline_steps.py` (samplers, compile helpers, device steps), `ddpm_hub/pipeline_editing.py` (the
editing mixin) and `ddpm_hub/pipeline_parameterization.py`. This public alias only re-exports their names; the
package itself imports the real modules.
"""

from __future__ import annotations

from .pipeline import (
    CONDITIONAL_CLASS_NAME,
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_NUM_INFERENCE_STEPS,
    OUTPUT_TYPES,
    PIPELINE_SOURCE_FILES,
    DDPMHubPipeline,
    DDPMHubPipelineOutput,
)
from .pipeline_editing import DDPMHubEditingMixin, DDPMHubInversionOutput, _image_size
from .pipeline_parameterization import split_prediction
from .pipeline_steps import (
    COMPILE_MODES,
    SAMPLERS,
    DeviceSteps,
    SchedulerSteps,
    _draw_noise,
    check_compile_options,
    compile_denoiser,
    repaint_levels,
    scheduler_from_name,
    slerp,
)
from .schedules import PORTABLE_BETA_SCHEDULES

__all__ = [
    "COMPILE_MODES",
    "CONDITIONAL_CLASS_NAME",
    "DEFAULT_GUIDANCE_SCALE",
    "DEFAULT_NUM_INFERENCE_STEPS",
    "OUTPUT_TYPES",
    "PIPELINE_SOURCE_FILES",
    "PORTABLE_BETA_SCHEDULES",
    "SAMPLERS",
    "DDPMHubEditingMixin",
    "DDPMHubInversionOutput",
    "DDPMHubPipeline",
    "DDPMHubPipelineOutput",
    "DeviceSteps",
    "SchedulerSteps",
    "_draw_noise",
    "_image_size",
    "check_compile_options",
    "compile_denoiser",
    "repaint_levels",
    "scheduler_from_name",
    "slerp",
    "split_prediction",
]
