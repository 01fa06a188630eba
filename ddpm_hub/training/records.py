"""What a run records: its settings (`training_config.json`), metrics (trackers, console, `metrics.jsonl`), preview
grids in the trackers, the run log (`train.log`) and its throughput."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from .. import __version__
from .plan import ModelPlan

logger = logging.getLogger("ddpm_hub")

METRICS_LOG = "metrics.jsonl"


def hyperparameters(configs, plan: ModelPlan, **derived) -> dict[str, Any]:
    """Every setting of the run, flat, as JSON values (`None` stays null: `defaults.tracker_hparams` converts for
    trackers, whose hparams take scalars only): the flags, the plan's schedule, and the `derived` values the run
    worked out (its image `resolution`, sizes, parts' settings)."""
    values: dict[str, Any] = {}
    for config in configs:
        for key, value in dataclasses.asdict(config).items():
            if key == "hub_token":
                continue  # never logged
            json_value = value is None or isinstance(value, (int, float, str, bool, list, tuple))
            values[key] = value if json_value else str(value)
    schedule = plan.scheduler_config
    values.update(
        model_source=plan.description,
        beta_schedule=schedule["beta_schedule"],
        num_train_timesteps=schedule["num_train_timesteps"],
        prediction_type=schedule["prediction_type"],
        ddpm_hub_version=__version__,
        **derived,
    )
    return values


def log_grid(accelerator: Accelerator, grid, step: int) -> None:
    import numpy as np

    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", np.asarray(grid), step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"samples": wandb.Image(grid)}, step=step)


def record_metrics(accelerator: Accelerator, output_dir: Path, step: int, values: dict[str, float]) -> None:
    """Send metrics to the trackers, the console log and `metrics.jsonl` (one JSON object per line)."""
    accelerator.log(values, step=step)
    logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    if accelerator.is_main_process:
        with open(output_dir / METRICS_LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")


def use_available_cpu_threads(accelerator: Accelerator) -> None:
    """Undo `accelerate launch`'s one-thread default for a lone CPU process (it halves speed on two cores).

    Without a GPU, the launcher sets OMP_NUM_THREADS=1 unless given --num_cpu_threads_per_process; a single
    training process should use the cores it is allowed to run on. A thread count the user chose (OMP_NUM_THREADS
    in the launcher's environment, or --num_cpu_threads_per_process) is kept.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    launched = "ACCELERATE_DYNAMO_BACKEND" in os.environ  # set by `accelerate launch`
    if accelerator.device.type != "cpu" or accelerator.num_processes != 1 or not launched:
        return
    if torch.get_num_threads() == 1 < cores and not _launcher_threads_chosen():
        torch.set_num_threads(cores)
        logger.info(
            "accelerate launch limited this CPU run to 1 thread; using %d (choose with --num_cpu_threads_per_process).",
            cores,
        )


def _launcher_threads_chosen() -> bool:
    """Whether `accelerate launch` (this process's parent) was told a thread count rather than defaulting to 1."""
    try:
        import psutil  # a dependency of accelerate

        launcher = psutil.Process(os.getppid())
        chosen = "OMP_NUM_THREADS" in launcher.environ()
        return chosen or any(arg.startswith("--num_cpu_threads_per_process") for arg in launcher.cmdline())
    except Exception:  # no /proc, or a parent we may not read: keep the old rule
        return False


def setup_logging(accelerator: Accelerator, output_dir: Path) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("diffusers", "datasets", "accelerate", "huggingface_hub", "httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    close_run_log()  # a previous run's in this process
    root = logging.getLogger()
    if accelerator.is_main_process:
        handler = logging.FileHandler(output_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.ddpm_hub_run_log = True
        root.addHandler(handler)
    else:
        logging.getLogger().setLevel(logging.ERROR)


def close_run_log() -> None:
    """Stop writing the run's `train.log` (a run that ends, or that stopped during setup and removes it)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "ddpm_hub_run_log", False)]:
        root.removeHandler(handler)
        handler.close()


class ThroughputMeter:
    """Training images per second since the last reading, not counting side work (previews, checkpoints, export)."""

    def __init__(self, images_per_step: int, device: torch.device):
        self.images_per_step, self.device = images_per_step, device
        self._reset()

    def _reset(self) -> None:
        self.start, self.steps, self.excluded = time.perf_counter(), 0, 0.0

    def restart(self) -> None:
        """Forget the time so far (the first step, which compiles)."""
        self._sync()
        self._reset()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # queued kernels belong to the time before, not to the side work

    def step(self) -> None:
        self.steps += 1

    @contextlib.contextmanager
    def paused(self):
        self._sync()
        began = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - began

    def read(self) -> float:
        self._sync()
        rate = self.steps * self.images_per_step / max(time.perf_counter() - self.start - self.excluded, 1e-9)
        self._reset()
        return rate
