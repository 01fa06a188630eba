"""Post-hoc EMA as a part of a run (`--post_hoc_ema`): the tracker (`tracker.py`) plugged into the Trainer's hooks.

    train_unconditional.py --post_hoc_ema --ema_sigma_rels 0.05,0.10 --ema_snapshot_steps 1000
    ddpm-hub ema RUN --sweep 0.02:0.25:12 --output_dir RUN-best-ema

The averages are updated after every optimizer step, kept in every checkpoint (exact resume), and written as
16-bit snapshots to `RUN/ema-snapshots/`; the fixed-decay EMA of `--use_ema` keeps working beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..training.parts import PreparedRun, RunPart
from .tracker import PostHocEMA, PostHocEMAConfig, parse_sigma_rels


class PostHocEMAPart(RunPart):
    """The part of `--post_hoc_ema`.

    Args:
        sigma_rels (`str`): `--ema_sigma_rels`, e.g. "0.05,0.10".
        snapshot_steps (`int`, *optional*): `--ema_snapshot_steps` (default: a 32nd of the run, and its last step).
    """

    name = "post_hoc_ema"

    def __init__(self, sigma_rels: str, snapshot_steps: int | None = None):
        self.sigma_rels = parse_sigma_rels(sigma_rels)  # a one-line ValueError, before anything heavy
        self.snapshot_steps = snapshot_steps
        self.tracker: PostHocEMA | None = None

    def prepare(self, run: PreparedRun) -> None:
        config = PostHocEMAConfig.for_run(self.sigma_rels, self.snapshot_steps, run.max_train_steps)
        self.tracker, self.model = PostHocEMA(config), run.model
        self.tracker.setup(run.model, run.output_dir, run.accelerator.is_main_process)

    def after_optimizer_step(self, step: int, finite) -> None:
        self.tracker.after_optimizer_step(self.model, step, finite)

    def save(self, folder: Path) -> None:
        self.tracker.save(folder)

    def load(self, folder: Path, state: dict[str, Any]) -> None:
        self.tracker.load(folder, state["global_step"])

    def hyperparameters(self) -> dict[str, Any]:
        return self.tracker.hyperparameters()
