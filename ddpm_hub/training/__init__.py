"""Training: `train_unconditional.py`'s loop (`Trainer`), its two seams (`DataSource`, `Step`) and their first
implementations (`InMemoryImages`, `ddpm_hub.train_step.TrainStep`).

    from ddpm_hub.training import Trainer, main, train

- `trainer.py`: `Trainer`, `TrainState`, `train`, `main` (the CLI's body).
- `seams.py`: the `DataSource` and `Step` protocols and the `StepFactory` that builds a step.
- `sources.py`: `InMemoryImages`, decoded images in memory or memory-mapped.
- `schedule.py`: the side work due after a step or an epoch (log, evaluate, checkpoint, preview, export).
- `plan.py`: what to train (`ModelPlan`, `plan_model`); `components.py`: the parts a run is built from.
- `records.py`: settings, metrics, logs and throughput; `errors.py`: `SetupError`, `PushError`.
"""

from .components import check_output_dir, shards_parameters
from .errors import PushError, SetupError, reported_as_setup_errors
from .plan import ModelPlan, plan_model
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
from .sources import InMemoryImages
from .trainer import RunSize, Trainer, TrainState, main, train

__all__ = [
    "METRICS_LOG",
    "DataSource",
    "InMemoryImages",
    "ModelPlan",
    "PushError",
    "RunConfigs",
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
    "main",
    "plan_model",
    "record_metrics",
    "reported_as_setup_errors",
    "setup_logging",
    "shards_parameters",
    "train",
    "use_available_cpu_threads",
]
