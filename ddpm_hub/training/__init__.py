"""Training: the loop (`Trainer`), its two seams (`DataSource`, `Step`) and the parts a run plugs into it.

    from ddpm_hub.training import Trainer, RunPart

- `trainer.py`: `Trainer` and `TrainState`: the story of a run, in phases (check, setup, resume, start, loop,
  finish). The entry point is above this package: `ddpm_hub/train.py` parses the flags, resolves the shards, builds
  the parts and hands them in; nothing here imports a part, a command or the explorer.
- `seams.py`: the `DataSource` and `Step` protocols (with their determinism contracts) and the `StepFactory`.
- `parts.py`: `RunPart`, what a run adds to plain training, consulted at the Trainer's hooks.
- `plan.py`: what to train (`ModelPlan`, built once by `plan_model` from the flags and the parts' `ModelShape`).
- `sources.py`: the data source the data flags name (`ddpm_hub.data` takes plain arguments).
- `schedule.py`: the side work due after a step or an epoch (log, evaluate, checkpoint, preview, export).
- `components.py`: accelerate, the publisher, EMA, optimizer, LR schedule; `records.py`: settings, metrics, logs.

How a part plugs in. A part is a `RunPart` subclass that overrides only the hooks it needs (see `parts.py` for
the table of hooks and when each is called); the entry point builds it from the flags. Latent diffusion
(`ddpm_hub.latents.space.LatentSpace`) is the model to follow:

- what the UNet must look like goes through `shape_model` (sample size, sample and conditioning channels, output
  multiple, class embedding type, scheduler overrides), never by editing the plan afterwards: super-resolution
  adds its low-resolution input channels and its noise-level embedding there, learned variances double the
  output and set the scheduler's `variance_type`;
- what the data is goes through `open_data` (the latent space encodes or streams latents);
- what the step does beyond plain DDPM goes through `step_options`, the one way it reaches the step factory (merged
  into `RunConfigs.step_options`; `make_train_step` reads `objective`, learned variances' bound, and `conditioning`,
  super-resolution's low-resolution input, drawn after the data source's `to_model_input` so that resume stays
  bit-identical);
- state that must survive a resume goes through `save`/`load` (files in the checkpoint: post-hoc EMA's averages) or
  `state_dict`/`load_state_dict` (`training_state.json`: a timestep sampler); work after each optimizer step
  through `after_optimizer_step` (post-hoc EMA's snapshots);
- what a saved pipeline is made of goes through `pipeline_parts` (a VAE), what sampling needs through `sampling`
  (the VAE on the accelerator), what the run records through `hyperparameters`.
A noise-aware classifier trains on the same Trainer: its step and model are its own, the frozen diffusion model's
schedule (and VAE, through `LatentSpace`) are parts.
"""

from ..data.memory import InMemoryImages
from ..errors import PushError, SetupError, reported_as_setup_errors
from .components import check_output_dir, shards_parameters
from .parts import DataOpening, PreparedRun, RunPart
from .plan import ModelPlan, ModelShape, plan_model
from .records import (
    METRICS_LOG,
    ThroughputMeter,
    hyperparameters,
    log_grid,
    record_metrics,
    setup_logging,
    use_available_cpu_threads,
)
from .schedule import Schedule, SideWork
from .seams import DataSource, RunConfigs, Step, StepFactory
from .trainer import RunSize, Trainer, TrainState

__all__ = [
    "METRICS_LOG",
    "DataOpening",
    "DataSource",
    "InMemoryImages",
    "ModelPlan",
    "ModelShape",
    "PreparedRun",
    "PushError",
    "RunConfigs",
    "RunPart",
    "RunSize",
    "Schedule",
    "SetupError",
    "SideWork",
    "Step",
    "StepFactory",
    "ThroughputMeter",
    "TrainState",
    "Trainer",
    "check_output_dir",
    "hyperparameters",
    "log_grid",
    "plan_model",
    "record_metrics",
    "reported_as_setup_errors",
    "setup_logging",
    "shards_parameters",
    "use_available_cpu_threads",
]
