"""What happens besides training after an optimizer step or an epoch: log, evaluate, checkpoint, preview, export."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainConfig
from ..evaluation.during_training import Evaluator


@dataclass(frozen=True)
class SideWork:
    """The side work due at one point of a run (a push follows its checkpoint or export when the run pushes)."""

    log: bool = False  # read the step monitor: loss, lr, images/s to the trackers (one host sync)
    evaluate: bool = False  # sample and score the EMA weights (main process)
    checkpoint: bool = False  # save a resumable checkpoint (every process)
    preview: bool = False  # save a preview grid (main process)
    export: bool = False  # save the pipeline into the output folder (main process)


class Schedule:
    """Decides the side work of a run from its flags; it keeps no state of its own (the evaluator knows its last step).

    Args:
        run (`TrainConfig`): reads `logging_steps`, `checkpointing_steps`, `save_images_steps`, `save_images_epochs`
            and `save_model_epochs`.
        evaluator (`Evaluator`): decides when to evaluate (`--eval_steps`, `--eval_epochs`).
        max_train_steps (`int`): the run's last optimizer step.
        num_epochs (`int`, *optional*): the run's number of epochs; `None` when the data's length is unknown.
    """

    def __init__(self, run: TrainConfig, evaluator: Evaluator, max_train_steps: int, num_epochs: int | None):
        self.run, self.evaluator = run, evaluator
        self.max_train_steps, self.num_epochs = max_train_steps, num_epochs

    def finished(self, step: int) -> bool:
        return step >= self.max_train_steps

    def after_step(self, step: int) -> SideWork:
        run = self.run
        return SideWork(
            log=step % run.logging_steps == 0 or step == self.max_train_steps,
            evaluate=self.evaluator.due(step),  # before the checkpoint, which keeps the best score
            checkpoint=step % run.checkpointing_steps == 0,
            preview=bool(run.save_images_steps) and step % run.save_images_steps == 0,
        )

    def after_epoch(self, epoch: int, step: int) -> SideWork:
        """At the end of `epoch` (0-based); the last epoch previews always and leaves the export to the finish."""
        last_epoch = self.finished(step) or (self.num_epochs is not None and epoch == self.num_epochs - 1)
        return SideWork(
            evaluate=self.evaluator.due(step, epoch_end=epoch + 1),
            preview=(epoch + 1) % self.run.save_images_epochs == 0 or last_epoch,
            export=(epoch + 1) % self.run.save_model_epochs == 0 and not last_epoch,
        )
