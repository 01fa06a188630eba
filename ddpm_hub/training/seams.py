"""The two seams of the training loop: where batches come from (`DataSource`) and what one batch does (`Step`).

The `Trainer` (`ddpm_hub/training/trainer.py`) owns everything around them: accelerate, gradient accumulation,
`apply_gradients`, EMA, the non-finite guard (`StepMonitor`), checkpoints with exact resume, SIGTERM, logging,
evaluation, export and the Hub push. A new kind of data (streamed shards, cached VAE latents) is a new
`DataSource`; a new objective (progressive distillation) is a new `Step`, built by a `StepFactory`:

    trainer = Trainer(model_config, data_config, run, hub, data=MyStream(...), step_factory=make_distill_step)
    trainer.run()

Exact resume rests on two promises: a data source yields the same batches for the same `(epoch, skip_batches,
state_dict())` on every run, and a step draws its random numbers in the same order every time (the generators
themselves are saved and restored with the checkpoint by accelerate).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from ..config import DataConfig, HubConfig, ModelConfig, TrainConfig


@runtime_checkable
class DataSource(Protocol):
    """Where a run's training batches come from: it owns decoding, batching, its per-process split, and its position.

    A batch is what `ddpm_hub.data.split_batch(batch)` splits into `(samples, class_labels_or_None)`: `samples` as
    stored (uint8 pixels, or latent statistics), turned into model input on the device by `to_model_input`.

    The Trainer calls, in this order: `num_batches` (to size the run), `make_loader` (once, after the model and
    optimizer are prepared), `load_state_dict` (on resume only, with what `state_dict` returned when the checkpoint
    was saved; `{}` for a checkpoint made before data sources had a state), then `epoch_batches` once per epoch, and
    `state_dict` at every checkpoint. `reference_images` is called once, on the main process, when evaluation is on.

    Guarantees a data source must give:
    - Determinism: the same `seed`, `epoch`, `skip_batches` and restored state give the same batches, in the same
      order, on every run (this is what makes a resumed run bit-identical to an uninterrupted one).
    - The split: each process gets its own share (accelerate's `prepare` does this for a map-style loader), and every
      process gets the same number of batches in an epoch (a collective in the step would hang otherwise).
    - `epoch_batches(epoch, skip_batches)` starts after the first `skip_batches` batches of that epoch without loading
      them; for a source of unknown length (`num_batches` returns `None`) the Trainer passes `skip_batches=0` and the
      position comes from `load_state_dict` instead. An epoch of unknown length ends when the iterator does.
    - `state_dict()` is JSON-able (it is stored in `training_state.json`).
    - `to_model_input` is the FIRST random draw of a step, on the device, from the global generator.
    """

    description: str  # for logs and the model card: "twemoji (built in)", "12 shards of data/*.tar"
    num_skipped: int  # unreadable images skipped (so far, for a stream)
    label_names: list[str] | None  # class names by id for a labelled set, else None
    num_classes: int  # len(label_names) or 0
    sample_shape: tuple[int, int, int]  # (C, H, W) of one training sample as the model sees it (pixels or latents)

    def num_batches(self, batch_size: int, num_processes: int) -> int | None:
        """Batches per process and epoch (full batches only); `None` when unknown (a stream)."""
        ...

    def make_loader(self, accelerator: Accelerator, batch_size: int, seed: int) -> None:
        """Build the loader (its shuffle order a function of `seed` and the epoch) and `accelerator.prepare` it."""
        ...

    def epoch_batches(self, epoch: int, skip_batches: int) -> Iterable[Any]:
        """This process's batches of `epoch`, after the first `skip_batches` (skipped by index, never loaded)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The position beyond (epoch, batch), e.g. a stream's iterator state; `{}` for map-style data."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (`{}` from a checkpoint that has none)."""
        ...

    def to_model_input(self, samples: torch.Tensor, random_flip: bool) -> torch.Tensor:
        """Device side, inside the step, the FIRST random draw of a step: stored samples -> model input.

        uint8 pixels -> [-1, 1] float (+ a random left-right flip); cached latent statistics -> a sampled, scaled
        latent (+ the choice of the flipped image's latent).
        """
        ...

    def reference_images(self, count: int | None) -> Any:
        """uint8 (N, C, H, W) *pixels* for FID references, at most `count` (all when `None`).

        A tensor, or for data too large for memory any object with `len()` whose slices are such tensors.
        """
        ...


@runtime_checkable
class Step(Protocol):
    """The per-batch math of a run: forward and backward of one micro-batch; owns what is compiled.

    Guarantees a step must give:
    - It calls `accelerator.backward` itself (once per micro-batch) and returns the DETACHED loss as a device
      scalar; the Trainer never reads it on the host per step (no sync), it only adds it to the `StepMonitor`.
    - A non-finite loss becomes NaN gradients (multiply the loss by `where(isfinite(loss), 1, nan)`, as
      `TrainStep.compute_loss` does), so the gradient norm alone decides to skip the step on every process.
    - Its random draws come in a fixed order from the global generators, which checkpoints save and restore: with
      `TrainStep` that is `data.to_model_input` (flip), then a part's conditioning (a super-resolution run's level
      and augmentation noise), then eps, then t, then the label drop. Changing the order
      breaks bit-identical resume and compiled-vs-eager equality.
    - Whatever it compiles, the parameters of `model` keep their plain names (checkpoints load with or without it).
    """

    model: torch.nn.Module  # the (prepared) module the optimizer updates, EMA averages, checkpoints save

    def __call__(self, samples: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        """Forward + backward of one micro-batch; returns the detached loss on the device."""
        ...


@dataclass(frozen=True)
class RunConfigs:
    """The four configs of a run, as a step factory receives them, with what the Trainer resolved from them."""

    model: ModelConfig
    data: DataConfig
    run: TrainConfig
    hub: HubConfig
    compile_mode: str | None = None  # torch.compile mode chosen for this device (`None`: run eagerly)
    step_options: Mapping[str, Any] = field(default_factory=dict)  # what the parts add to the step (`step_options`)


class StepFactory(Protocol):
    """Builds the run's `Step` once the model is prepared: `factory(model, noise_scheduler, accelerator, data, config)`.

    Called after `accelerator.prepare` and before resume (a step may register more state with the accelerator then,
    e.g. a frozen teacher needs none). The default is `ddpm_hub.train_step.make_train_step`. The run's parts'
    `step_options()` are in `config.step_options` (a factory reads those it knows).
    """

    def __call__(
        self,
        model: torch.nn.Module,
        noise_scheduler: DDPMScheduler,
        accelerator: Accelerator,
        data: DataSource,
        config: RunConfigs,
    ) -> Step: ...
