"""Parts of a run: what a run adds to plain DDPM training, plugged into the `Trainer` at its hooks.

A run is a `Trainer` and a list of parts that the entry point (`ddpm_hub/train.py`) builds from the flags and hands
in: `Trainer(configs, data=..., parts=[LatentSpace(...)])`. The Trainer never imports a part; it calls each part's
hooks, in the order of the list, at fixed points of the run. Every hook has a default that does nothing, so a part
implements only what it changes:

| hook | when | e.g. |
|---|---|---|
| `check(configs)` | before anything heavy; may fill implied flags, or raise `ValueError` | latent shards: their VAE |
| `shape_model(shape)` | before the plan is built (once) | latents: sample size, channels; learned variances: 2x out |
| `image_resolution(sample_size)` | sizing data, references, previews | latents: sample size x the VAE's factor |
| `open_data(opening)` | setup, instead of the default source | latents: the cached latents, latent shards |
| `prepare(context)` | once the model, optimizer and data are prepared | post-hoc EMA: its averages |
| `step_options()` | building the step: `RunConfigs.step_options` | learned variances: `objective`; SR: `conditioning` |
| `after_optimizer_step(step, finite)` | after every optimizer step | post-hoc EMA: update, snapshot |
| `save(folder)`, `load(folder, state)` | inside every checkpoint, on resume | post-hoc EMA: its averages |
| `state_dict()`, `load_state_dict()` | `training_state.json` | learned variances: the timestep sampler |
| `sampling()` | around previews, evaluations, exports | latents: the VAE on the accelerator |
| `pipeline_parts(parts)` | every pipeline built from the run | latents: `vae`, scaling factor |
| `hyperparameters()` | `training_config.json`, trackers, card | latents: VAE name, latent shape |

Determinism: a part that draws random numbers in the step (conditioning augmentation) does so in a fixed order
after the data source's `to_model_input` (see `seams.Step`); a part's state that a resumed run needs goes into the
checkpoint through `save`/`load` or `state_dict`, so a resumed run stays bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .plan import ModelShape

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..assembly import PipelineParts
    from ..data.shards import ShardSet
    from .seams import DataSource, RunConfigs


@dataclass(frozen=True)
class DataOpening:
    """What a part needs to open the run's data source (`RunPart.open_data`).

    `open_default(channels=..., member=None)` opens the source the data flags name (decoded images at
    `image_resolution` with `channels`, or a stream; with a `member`, the shards' samples train on that member), so
    that a part can build on it (the latent space encodes its images) or redirect it (latent shards).
    """

    configs: RunConfigs
    image_resolution: int
    accelerator: Accelerator
    seed: int  # the decoding seed (random crops, a subset): the run's, or a distillation's own
    shards: ShardSet | None
    open_default: Callable[..., DataSource]


@dataclass(frozen=True)
class PreparedRun:
    """What a part sees once the run is prepared (`RunPart.prepare`)."""

    model: Any  # the unwrapped UNet the optimizer updates
    accelerator: Accelerator
    output_dir: Path
    data: DataSource
    max_train_steps: int


class RunPart:
    """A part of a run; see the module docstring. Subclass it and override the hooks the part needs."""

    name = "part"

    def check(self, configs: RunConfigs) -> RunConfigs:
        return configs

    def shape_model(self, shape: ModelShape) -> ModelShape:
        return shape

    def image_resolution(self, sample_size: int) -> int:
        return sample_size

    def open_data(self, opening: DataOpening) -> DataSource | None:
        return None

    def prepare(self, run: PreparedRun) -> None:
        pass

    def step_options(self) -> dict[str, Any]:
        return {}

    def after_optimizer_step(self, step: int, finite) -> None:
        pass

    def save(self, folder: Path) -> None:
        pass

    def load(self, folder: Path, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @contextlib.contextmanager
    def sampling(self) -> Iterator[None]:
        yield

    def pipeline_parts(self, parts: PipelineParts) -> PipelineParts:
        return parts

    def hyperparameters(self) -> dict[str, Any]:
        return {}
