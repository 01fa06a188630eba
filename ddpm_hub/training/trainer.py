"""The training loop of `train_unconditional.py`: a `Trainer` whose `run()` is the story of a run, in phases.

    accelerate launch train_unconditional.py                       # small model, built-in emoji, a few CPU minutes
    accelerate launch train_unconditional.py --model ddpm-64 --dataset_name huggan/smithsonian_butterflies_subset \\
        --resolution 64 --train_batch_size 64 --mixed_precision bf16 --num_epochs 100

The loop is accelerate's canonical shape (prepare -> accumulate -> backward -> side work when gradients sync). The
batches come from a `DataSource` and the per-batch math is a `Step` (see `seams.py`); what happens besides training
at a step or an epoch's end is decided by `Schedule`; everything the run knows as it goes is in one `TrainState`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from .. import run_folder
from ..assembly import PipelineParts
from ..checkpointing import SignalStop, load_checkpoint, resolve_checkpoint, save_checkpoint, set_aside_abandoned
from ..config import DataConfig, HubConfig, ModelConfig, TrainConfig
from ..data import split_batch
from ..data.shards import ShardSet
from ..defaults import resolve_defaults, tracker_hparams
from ..errors import PushError, SetupError, reported_as_setup_errors
from ..evaluation.during_training import BEST_DIR, Evaluator
from ..export import ema_weights, export_pipeline, sample_grid
from ..files import save_image, write_json
from ..model_card import CONFIG_FILE, METRICS_FILE, SAMPLE_GRID, CardInfo, card_info_for_run, write_model_card
from ..train_step import (
    CompileTimer,
    DivergedError,
    StepMonitor,
    apply_gradients,
    choose_compile_mode,
    default_compile_cache_dir,
    diverged_message,
    ema_update,
    make_train_step,
    use_compile_cache,
)
from . import components
from .parts import DataOpening, PreparedRun, RunPart
from .plan import ModelShape, plan_model
from .records import (
    ThroughputMeter,
    close_run_log,
    hyperparameters,
    log_grid,
    record_metrics,
    setup_logging,
    use_available_cpu_threads,
)
from .schedule import Schedule
from .seams import DataSource, RunConfigs, Step, StepFactory
from .sources import open_source

logger = logging.getLogger("ddpm_hub")


@dataclass
class TrainState:
    """Where a run stands; the loop changes nothing else as it goes."""

    step: int = 0  # optimizer steps done (the checkpoints' `global_step`)
    epoch: int = 0  # the epoch being trained
    first_epoch: int = 0  # the epoch this process started (or resumed) in
    skip_batches: int = 0  # batches of `first_epoch` trained before a resume
    last_loss: float = math.nan  # the last finite logged loss
    best_score: float | None = None  # the best FID so far (with --eval_steps / --eval_epochs)
    stopped_by: str | None = None  # the signal that stopped the run early, if one did
    epoch_started: float = 0.0  # perf_counter() at the start of this epoch
    preview: Any = None  # the last preview grid (a PIL image)


@dataclass(frozen=True)
class RunSize:
    """How long a run is, decided once from the data's length and the flags."""

    steps_per_epoch: int | None  # None when the data's length is unknown (a stream)
    max_train_steps: int
    num_epochs: int | None
    total_batch_size: int  # per device x processes x accumulation


class Trainer:
    """Trains a DDPM as the configs say: `Trainer(model, data, run, hub).run()` returns the output folder.

    Construction only stores its arguments (build one per distillation round); `run()` does everything, in phases:
    `check` (cheap input checks, the plan, the Hub publisher), `setup` (accelerate, data, model, optimizer, step),
    `resume`, `start` (settings and trackers), `loop`, `finish` (final evaluation, checkpoint, export, card, push).
    One `ExitStack` closes the progress bar, the trackers (`accelerator.end_training`) and the publisher whatever
    way the run ends.

    Args:
        model_config, data_config, run, hub: the parsed flags (`ddpm_hub.config`).
        data (`DataSource`, *optional*): where batches come from; by default a part's source (`RunPart.open_data`)
            or the one the data flags name (`sources.open_source`), opened during setup.
        step_factory (`StepFactory`, defaults to `make_train_step`): builds the per-batch `Step` once the model is
            prepared: `step_factory(model, noise_scheduler, accelerator, data, config) -> Step`.
        shards (`ShardSet`, *optional*): `--train_shards`, resolved once by the entry point.
        parts (`list[RunPart]`, *optional*): what the run adds to plain training (latent diffusion, ...), consulted at
            the hooks described in `parts.py`.

    A subclass (progressive distillation) reuses all of that and overrides only what differs: `model_config()`-like
    inputs, `model_shape()` (its scheduler's spacing), `load_data()`, `pipeline_parts()` (what a saved pipeline
    is), `checkpoint_state()` / `restore_state(state)`, `hyperparameters()` and `card_info(metrics)`.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        data_config: DataConfig,
        run: TrainConfig,
        hub: HubConfig,
        *,
        data: DataSource | None = None,
        step_factory: StepFactory = make_train_step,
        shards: ShardSet | None = None,
        parts: list[RunPart] | tuple[RunPart, ...] = (),
    ):
        self.configs = RunConfigs(model_config, data_config, run, hub)
        self.run_config = run
        self.given_data, self.step_factory = data, step_factory
        self.shards, self.parts = shards, tuple(parts)
        self.output_dir = Path(run.output_dir)
        self.state = TrainState()
        self._preview_images = None  # what a super-resolution model's previews upscale, read at the first preview

    # ---- the story of a run ---------------------------------------------------------------------------------

    def run(self) -> Path:
        """Train; returns the output folder holding the saved pipeline (or the last checkpoint, if stopped)."""
        self.run_start = time.perf_counter()
        created = run_folder.first_missing_folder(self.output_dir)
        with contextlib.ExitStack() as cleanup:
            try:
                self.check(cleanup)  # 1. everything that can be checked cheaply, before data or weights are touched
                self.setup(cleanup)  # 2. accelerate, data, model, EMA, optimizer, LR schedule, step
            except SetupError:  # bad input: a folder this run created keeps nothing of it (its log)
                close_run_log()
                run_folder.remove_setup_leftovers(self.output_dir, created)
                raise
            self.resume()  # 3. every state from the checkpoint, and the data position
            self.start()  # 4. the run's settings to training_config.json and the trackers
            self.loop(cleanup)  # 5. epochs of optimizer steps, side work as scheduled, until done or signalled
            return self.finish()  # 6. a final evaluation and checkpoint; the pipeline, the card, the upload

    # ---- 1.-2. check and set up -----------------------------------------------------------------------------

    def check(self, cleanup: contextlib.ExitStack) -> None:
        with reported_as_setup_errors():
            components.check_output_dir(self.run_config)
            for part in self.parts:  # a part may fill flags it implies (latent shards: their VAE, resolution)
                self.configs = part.check(self.configs)
            # Every None default filled in once (defaults.py), so that training_config.json records what ran.
            model_config, run = resolve_defaults(self.configs.model, self.run_config, self.configs.data.cache_dir)
            self.configs = dataclasses.replace(self.configs, model=model_config, run=run)
            self.run_config = run
            self.plan = plan_model(model_config, self.configs.data.cache_dir, self.model_shape())
            self.image_resolution = self.plan.resolution
            for part in self.parts:
                self.image_resolution = part.image_resolution(self.image_resolution)
            self.checkpoint_path = resolve_checkpoint(self.output_dir, run.resume_from_checkpoint)
            self.evaluator = Evaluator(run, self.output_dir)  # FID & co. every --eval_steps / --eval_epochs
            self.publisher = self.make_publisher()
        if self.publisher is not None:
            cleanup.callback(self.publisher.close)

    def make_publisher(self):
        """The Hub publisher of a pushing run (first process only), else `None`; a run that saves something else
        than a pipeline pushes with a snapshot of its own."""
        return components.make_publisher(self.configs.hub, self.output_dir)

    def model_shape(self) -> ModelShape:
        """What the parts ask of the UNet and its schedule, in their order."""
        shape = ModelShape(sample_size=self.configs.model.resolution)
        for part in self.parts:
            shape = part.shape_model(shape)
        return shape

    def end_training(self) -> None:
        """The trackers' writers closed and accelerate's process group destroyed, however the run ends."""
        self.accelerator.end_training()

    def setup(self, cleanup: contextlib.ExitStack) -> None:
        run = self.run_config
        self.accelerator = accelerator = components.make_accelerator(run, self.output_dir)
        cleanup.callback(self.end_training)  # closes the trackers' writers
        components.prepare_output_dir(accelerator, run, resuming=self.checkpoint_path is not None)
        setup_logging(accelerator, self.output_dir)
        use_available_cpu_threads(accelerator)
        if run.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # Data: decoded once (main process first, the others reuse its cache).
        with reported_as_setup_errors(), accelerator.main_process_first():
            self.data = self.load_data()
        if accelerator.is_main_process:
            with reported_as_setup_errors():
                self.evaluator.prepare(self.data, self.image_resolution, accelerator.device)
        self.size = self.size_run()
        self.build_model()
        prepared = PreparedRun(self.base_unet, accelerator, self.output_dir, self.data, self.size.max_train_steps)
        for part in self.parts:
            part.prepare(prepared)

    def load_data(self) -> DataSource:
        """The run's data source: the one given, else the first part's that opens one, else the data flags'."""
        if self.given_data is not None:
            return self.given_data
        opening = DataOpening(
            self.configs, self.image_resolution, self.accelerator, self.data_seed(), self.shards, self.open_default
        )
        for part in self.parts:
            source = part.open_data(opening)
            if source is not None:
                return source
        return self.open_default(channels=self.plan.sample_channels)

    def open_default(self, *, channels: int, member=None) -> DataSource:
        """The source the data flags name, at the image resolution (see `sources.open_source`)."""
        return open_source(
            self.configs.data, resolution=self.image_resolution, channels=channels, accelerator=self.accelerator,
            seed=self.data_seed(), shards=self.shards, member=member,
        )  # fmt: skip

    def data_seed(self) -> int:
        """The seed of the images' decoding (random crops, the --max_train_samples subset): the run's own."""
        return self.run_config.seed

    def size_run(self) -> RunSize:
        run, processes = self.run_config, self.accelerator.num_processes
        total_batch_size = run.train_batch_size * processes * run.gradient_accumulation_steps
        batches_per_epoch = self.data.num_batches(run.train_batch_size, processes)
        if batches_per_epoch is None:
            if not run.max_train_steps:
                raise SetupError(
                    f"The length of {self.data.description} is not known in advance; give the run's length with "
                    "--max_train_steps."
                )
            return RunSize(None, run.max_train_steps, None, total_batch_size)
        if batches_per_epoch == 0:
            raise SetupError(
                f"The data set has {len(self.data)} images, fewer than one batch of {run.train_batch_size} x "
                f"{processes} processes; lower --train_batch_size."
            )
        steps_per_epoch = math.ceil(batches_per_epoch / run.gradient_accumulation_steps)
        max_train_steps = run.max_train_steps or run.num_epochs * steps_per_epoch
        return RunSize(steps_per_epoch, max_train_steps, math.ceil(max_train_steps / steps_per_epoch), total_batch_size)

    def build_model(self) -> None:
        """Model, EMA, optimizer, LR schedule, loader and step.

        Same initial weights on every process; different noise.
        """
        run, accelerator = self.run_config, self.accelerator
        set_seed(run.seed)
        with reported_as_setup_errors():
            unet = self.new_model()
        set_seed(run.seed, device_specific=True)
        unet = components.configure_unet(unet, run)
        self.ema = components.make_ema(unet, run)
        self.learning_rate = (run.learning_rate or self.plan.learning_rate) * (
            self.size.total_batch_size if run.scale_lr else 1
        )
        optimizer = components.make_optimizer(unet, run, self.learning_rate, accelerator.device)
        lr_scheduler = components.make_lr_scheduler(
            run, optimizer, self.size.max_train_steps, accelerator.num_processes
        )
        self.unet, self.optimizer, self.lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
        self.data.make_loader(accelerator, run.train_batch_size, run.seed)
        self.noise_scheduler = self.plan.noise_scheduler()
        self.noise_scheduler.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(accelerator.device)
        self.base_unet = accelerator.unwrap_model(self.unet)
        self.compile_mode = None
        if run.compile:
            self.compile_mode = choose_compile_mode(
                run.compile_mode, accelerator.device, accelerator.num_processes, run.gradient_accumulation_steps
            )
            cache = use_compile_cache(run.compile_cache_dir or default_compile_cache_dir())
            logger.info(
                "Compiling the training step (backend %s, mode %s; cache %s).",
                run.compile_backend,
                self.compile_mode,
                cache,
            )
        # The step function is compiled, not the UNet: checkpoints keep plain parameter names, so a run may be
        # resumed with or without --compile.
        options = {key: value for part in self.parts for key, value in part.step_options().items()}
        configs = RunConfigs(self.configs.model, self.configs.data, run, self.configs.hub, self.compile_mode, options)
        self.step: Step = self.step_factory(self.unet, self.noise_scheduler, accelerator, self.data, configs)

    def new_model(self) -> torch.nn.Module:
        """The model to train, with its initial weights: the plan's UNet for the data's classes."""
        return self.plan.build(self.data.num_classes, self.configs.data.cache_dir)

    # ---- 3.-4. resume and start -----------------------------------------------------------------------------

    def resume(self) -> None:
        """Restore every state, then start at the recorded data position (skipped by index, not loaded)."""
        if self.checkpoint_path is None:
            if self.ema is not None:
                self.ema.to(self.accelerator.device)
            return
        with reported_as_setup_errors():
            state = load_checkpoint(self.accelerator, self.checkpoint_path, model=self.base_unet, ema=self.ema)
            for part in self.parts:
                part.load(self.checkpoint_path, state)
        if self.accelerator.is_main_process:  # later checkpoints: another branch of the run, never mixed with this
            set_aside_abandoned(self.output_dir, state["global_step"])
        self.accelerator.wait_for_everyone()
        if self.ema is not None:
            self.ema.to(self.accelerator.device)  # loaded onto the CPU
        self.restore_state(state)
        logger.info(
            "Resumed from %s at step %d (epoch %d, batch %d).",
            self.checkpoint_path, self.state.step, self.state.first_epoch, self.state.skip_batches,
        )  # fmt: skip

    def checkpoint_state(self) -> dict[str, Any]:
        """The `training_state.json` of a checkpoint (JSON-able).

        Extend it in a subclass, read it in `restore_state`.
        """
        return dict(
            global_step=self.state.step,
            epoch=self.state.epoch,
            steps_per_epoch=self.size.steps_per_epoch,
            total_batch_size=self.size.total_batch_size,
            **self.evaluator.state(),
            data_state=self.data.state_dict(),
            **self.parts_state(),
        )

    def parts_state(self) -> dict[str, Any]:
        """The parts' own state in `training_state.json` (`"parts": {name: state}`), when a part has one."""
        states = {part.name: part.state_dict() for part in self.parts}
        states = {name: state for name, state in states.items() if state}
        return {"parts": states} if states else {}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Take up a checkpoint's `training_state.json` (also one written before data sources had a state)."""
        self.state.step = state["global_step"]
        self.evaluator.restore(state)
        self.state.best_score = self.evaluator.best["fid"] if self.evaluator.best else None
        self.data.load_state_dict(state.get("data_state") or {})
        for part in self.parts:
            part.load_state_dict(state.get("parts", {}).get(part.name, {}))
        steps_per_epoch = self.size.steps_per_epoch
        if steps_per_epoch is None:  # a stream: its own state holds the position within the epoch
            self.state.first_epoch = state.get("epoch", 0)
            return
        self.state.first_epoch, step_in_epoch = divmod(self.state.step, steps_per_epoch)
        self.state.skip_batches = step_in_epoch * self.run_config.gradient_accumulation_steps
        if state.get("steps_per_epoch") != steps_per_epoch:
            logger.warning(
                "The checkpoint was made with %s steps per epoch, this run has %s (batch size, data or number of "
                "processes changed): the data position is approximate.", state.get("steps_per_epoch"), steps_per_epoch
            )  # fmt: skip

    def hyperparameters(self) -> dict[str, Any]:
        """Every setting of the run (`training_config.json`, the trackers, the card); extend it in a subclass."""
        run, size, data = self.run_config, self.size, self.data
        known_size = {"dataset_size": len(data)} if hasattr(data, "__len__") else {}
        return hyperparameters(
            (self.configs.model, self.configs.data, run, self.configs.hub),
            self.plan,
            resolution=self.image_resolution,
            **known_size,
            skipped_images=data.num_skipped,
            num_processes=self.accelerator.num_processes,
            total_batch_size=size.total_batch_size,
            steps_per_epoch=size.steps_per_epoch if size.steps_per_epoch is not None else "unknown",
            max_train_steps=size.max_train_steps,
            num_epochs_effective=size.num_epochs if size.num_epochs is not None else "unknown",
            unet_parameters=sum(p.numel() for p in self.base_unet.parameters()),
            learning_rate_effective=self.learning_rate,
            mixed_precision_effective=self.accelerator.mixed_precision,
            compile_mode_effective=self.compile_mode or "none",
            num_classes=data.num_classes,
            label_names=data.label_names,
            **{key: value for part in self.parts for key, value in part.hyperparameters().items()},
        )

    def start(self) -> None:
        run, size, accelerator = self.run_config, self.size, self.accelerator
        self.hparams = self.hyperparameters()
        if accelerator.is_main_process:
            write_json(self.output_dir / CONFIG_FILE, self.hparams)
            accelerator.init_trackers("train_unconditional", config=tracker_hparams(self.hparams))
        images = f"{len(self.data)} images of " if hasattr(self.data, "__len__") else ""
        logger.info(
            "Training %s (%.1fM parameters) at %dpx on %s%s (%d unreadable skipped): %d steps, %s epochs, "
            "batch %d per device x %d processes x %d accumulation = %d, precision %s, on %s.",
            self.plan.description, self.hparams["unet_parameters"] / 1e6, self.image_resolution, images,
            self.data.description, self.data.num_skipped, size.max_train_steps, self.hparams["num_epochs_effective"],
            run.train_batch_size, accelerator.num_processes, run.gradient_accumulation_steps, size.total_batch_size,
            accelerator.mixed_precision, accelerator.device,
        )  # fmt: skip

    # ---- 5. the loop ----------------------------------------------------------------------------------------

    def loop(self, cleanup: contextlib.ExitStack) -> None:
        run, state, accelerator = self.run_config, self.state, self.accelerator
        self.progress = tqdm(
            total=self.size.max_train_steps,
            initial=state.step,
            desc="Training",
            disable=not accelerator.is_local_main_process,
        )
        cleanup.callback(self.progress.close)
        self.monitor = StepMonitor(accelerator.device, state.step, run.max_nonfinite_steps)
        self.throughput = ThroughputMeter(self.size.total_batch_size, accelerator.device)
        self.compile_timer = CompileTimer(run.compile, accelerator.device)
        self.schedule = Schedule(run, self.evaluator, self.size.max_train_steps, self.size.num_epochs)
        state.epoch = state.first_epoch
        with SignalStop() as stop:
            for epoch in self.epochs():
                state.epoch = epoch
                self.train_epoch(stop)
                if state.stopped_by:
                    break
                self.end_epoch()
                if self.schedule.finished(state.step):
                    break
        self.progress.close()

    def epochs(self):
        """The epochs still to train: up to the run's number, or passes over a stream until the last step."""
        if self.size.num_epochs is None:
            return itertools.count(self.state.first_epoch)
        return range(self.state.first_epoch, self.size.num_epochs)

    def train_epoch(self, stop: SignalStop) -> None:
        """One epoch of batches, with the side work due after each optimizer step; stops early at the last step."""
        state = self.state
        self.unet.train()
        state.epoch_started = time.perf_counter()
        skip = state.skip_batches if state.epoch == state.first_epoch else 0
        num_batches = 0
        for batch in self.data.epoch_batches(state.epoch, skip):
            num_batches += 1
            if not self.train_batch(batch):
                continue  # gradients accumulate over more micro-batches
            self.after_step(stop)
            if state.stopped_by or self.schedule.finished(state.step):
                return
        resumed_at_its_end = state.epoch == state.first_epoch and self.checkpoint_path is not None
        if num_batches == 0 and not resumed_at_its_end:
            raise RuntimeError(f"{self.data.description} gave no batch in epoch {state.epoch}.")

    def train_batch(self, batch: Any) -> bool:
        """Forward and backward of one micro-batch; an optimizer step when gradients sync (then True)."""
        samples, class_labels = split_batch(batch)
        accelerator = self.accelerator
        with accelerator.accumulate(self.unet):
            self.monitor.add_loss(self.step(samples, class_labels))  # stays on the device: no host sync per step
            if accelerator.sync_gradients:
                finite = apply_gradients(
                    accelerator, self.unet, self.optimizer, self.lr_scheduler, self.run_config.max_grad_norm
                )
        if not accelerator.sync_gradients:
            return False
        self.state.step += 1
        self.monitor.end_step(finite)
        if self.ema is not None:
            ema_update(self.ema, self.base_unet.parameters(), finite)
        for part in self.parts:
            part.after_optimizer_step(self.state.step, finite)
        self.progress.update(1)
        return True

    def after_step(self, stop: SignalStop) -> None:
        """The side work due after this optimizer step, then whether a signal asks to stop."""
        self.time_compilation()
        work = self.schedule.after_step(self.state.step)
        if work.log:
            self.log_step()
        main = self.accelerator.is_main_process
        with self.throughput.paused():
            if work.evaluate and main:
                self.evaluate()
            if work.checkpoint:
                saved = self.save_checkpoint()
                if self.publisher is not None and main:
                    self.publisher.push_checkpoint_async(saved)
            if work.preview and main:
                self.preview()
        self.state.stopped_by = self.stop_requested(stop, at_log_step=work.log)

    def end_epoch(self) -> None:
        state, main = self.state, self.accelerator.is_main_process
        epoch_seconds = time.perf_counter() - state.epoch_started
        record_metrics(
            self.accelerator, self.output_dir, state.step, {"epoch": state.epoch, "epoch_seconds": epoch_seconds}
        )
        work = self.schedule.after_epoch(state.epoch, state.step)
        with self.throughput.paused():
            if main and work.evaluate:
                self.evaluate()
            if main and work.preview:
                self.preview()
            if main and work.export:
                self.fail_if_diverged(self.monitor.diverged())
                self.export(self.output_dir)
                if self.publisher is not None:
                    self.publisher.push_async(f"Epoch {state.epoch}, step {state.step}")
            self.accelerator.wait_for_everyone()

    def stop_requested(self, stop: SignalStop, at_log_step: bool) -> str | None:
        """The signal that asks this run to stop now, if any (agreed by all processes)."""
        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return stop.received
        if not at_log_step:
            return None
        # One process alone may have seen the signal: agree where the processes synchronise anyway.
        if stop.received:
            accelerator.set_trigger()
        if accelerator.check_trigger():
            return stop.received or "a signal on another process"
        return None

    # ---- side work ------------------------------------------------------------------------------------------

    def time_compilation(self) -> None:
        compile_seconds = self.compile_timer.first_step_done()
        if compile_seconds is None:
            self.throughput.step()
        else:
            self.throughput.restart()  # images/s leaves compilation out
            record_metrics(self.accelerator, self.output_dir, self.state.step, {"compile_seconds": compile_seconds})

    def log_step(self) -> None:
        report = self.monitor.read(self.accelerator)
        logs = {
            "loss": report.mean_loss,
            "lr": self.lr_scheduler.get_last_lr()[0],
            "images_per_second": self.throughput.read(),
            "epoch": self.state.epoch,
            "nonfinite_steps": report.nonfinite_steps,
        }
        if report.nonfinite_steps:
            logger.warning(
                "Skipped %d of the last steps: non-finite loss or gradient norm (weights, optimizer "
                "and EMA left as they were).", report.nonfinite_steps
            )  # fmt: skip
        if self.ema is not None:
            logs["ema_decay"] = self.ema.cur_decay_value
        if torch.cuda.is_available():
            logs["gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        record_metrics(self.accelerator, self.output_dir, self.state.step, logs)
        self.fail_if_diverged(report.diverged_at)
        self.progress.set_postfix(loss=f"{report.mean_loss:.4f}", lr=f"{logs['lr']:.2e}")
        if math.isfinite(report.mean_loss):
            self.state.last_loss = report.mean_loss

    def fail_if_diverged(self, step: int | None) -> None:
        # Raised on every process alike (the flag follows the all-reduced gradients), before anything is saved.
        if step is not None:
            raise DivergedError(diverged_message(step, self.run_config.max_nonfinite_steps, self.learning_rate))

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint of this step (every process), refused once the run has diverged."""
        self.fail_if_diverged(self.monitor.diverged())
        return save_checkpoint(
            self.accelerator, self.output_dir, self.checkpoint_state(), self.run_config.checkpoints_total_limit,
            model=self.base_unet, ema=self.ema, save_parts=self.save_parts,
        )  # fmt: skip

    def save_parts(self, folder: Path) -> None:
        """The parts' files in a checkpoint being written (main process; `folder` is renamed into place after)."""
        for part in self.parts:
            part.save(folder)

    def evaluate(self) -> None:
        """Score the EMA weights; a better FID is exported to best/ through `export` (main process)."""
        with ema_weights(self.ema, self.base_unet), self.accelerator.autocast(), self.sampling():
            evaluation = self.evaluator.evaluate(self.pipeline_parts(), self.state.step)
        if evaluation.improved:
            self.export(self.output_dir / BEST_DIR)
            self.evaluator.save_best(self.output_dir / BEST_DIR)
            self.state.best_score = evaluation.scores["fid"]
        record_metrics(self.accelerator, self.output_dir, self.state.step, evaluation.metrics)

    def pipeline_parts(self) -> PipelineParts:
        """What a pipeline of this run is made of (previews, evaluations, exports): the UNet being trained, the
        training scheduler, the class names of a labelled set, and what the parts add (a latent run's VAE)."""
        parts = PipelineParts(self.base_unet, self.noise_scheduler, self.data.label_names)
        for part in self.parts:
            parts = part.pipeline_parts(parts)
        return parts

    @contextlib.contextmanager
    def sampling(self):
        """While a preview or an evaluation samples: what the parts need (a latent run's VAE on the accelerator)."""
        with contextlib.ExitStack() as stack:
            for part in self.parts:
                stack.enter_context(part.sampling())
            yield

    def preview(self) -> None:
        grid = self.preview_grid()
        save_image(grid, self.output_dir / "samples" / f"step-{self.state.step:07d}.png")
        log_grid(self.accelerator, grid, self.state.step)
        self.state.preview = grid

    def preview_grid(self):
        """The preview grid of the EMA weights (a PIL image), sampled with fixed seeds."""
        run = self.run_config
        with ema_weights(self.ema, self.base_unet), self.accelerator.autocast(), self.sampling():
            return sample_grid(
                self.pipeline_parts(),
                num_images=run.eval_batch_size,
                sampler=run.preview_sampler,
                num_inference_steps=run.ddpm_num_inference_steps,
                seed=run.seed,
                images=self.preview_images,
            )

    def preview_images(self):
        """The training images a super-resolution model's previews upscale: the data's first `--eval_batch_size`
        pixel images, read once (a stream's by a reader of their own, so that the training position is untouched)."""
        if self._preview_images is None:
            self._preview_images = self.data.reference_images(self.run_config.eval_batch_size)[:]
        return self._preview_images

    def export(self, folder: Path) -> None:
        """Save the pipeline (EMA weights, the class names of a labelled set) into `folder`; the one export path."""
        with ema_weights(self.ema, self.base_unet):
            export_pipeline(self.pipeline_parts(), folder)

    def write_card(self, metrics: dict[str, Any]) -> None:
        """The model card (README.md) of the output folder."""
        write_model_card(self.output_dir, self.card_info(metrics))

    def card_info(self, metrics: dict[str, Any]) -> CardInfo:
        """What the model card says; extend it in a subclass."""
        return card_info_for_run(self.hparams, metrics, self.publisher.repo_id if self.publisher else None)

    # ---- 6. finish ------------------------------------------------------------------------------------------

    def finish(self) -> Path:
        state, main = self.state, self.accelerator.is_main_process
        if not state.stopped_by and main and self.evaluator.due(state.step, final=True):
            self.evaluate()
        if not (self.output_dir / f"checkpoint-{state.step}").exists():
            self.save_checkpoint()  # to continue later
        if state.stopped_by:
            logger.warning(
                "Stopped by %s at step %d; resume with --resume_from_checkpoint latest.", state.stopped_by, state.step
            )
            return self.output_dir
        if main:
            self.fail_if_diverged(self.monitor.diverged())
            self.export(self.output_dir)
            if state.preview is None:
                self.preview()
            save_image(state.preview, self.output_dir / SAMPLE_GRID)
            metrics = self.final_metrics()
            write_json(self.output_dir / METRICS_FILE, metrics)
            self.write_card(metrics)
            logger.info("Saved the pipeline to %s", self.output_dir)
        self.push_final()
        return self.output_dir

    def final_metrics(self) -> dict[str, Any]:
        return {
            "final_loss": round(self.state.last_loss, 5),
            "optimizer_steps": self.state.step,
            "images_seen": self.state.step * self.size.total_batch_size,
            "training_minutes": round((time.perf_counter() - self.run_start) / 60, 2),
            "nonfinite_steps": self.monitor.total_skipped,
            **self.evaluator.card_metrics(),
        }

    def push_final(self) -> None:
        push_error = None
        if self.publisher is not None:
            try:
                self.publisher.push_final(f"Training finished at step {self.state.step}")
            except Exception as error:  # reported after every process has finished, so none is left waiting
                push_error = PushError(
                    f"training finished and the pipeline is saved in {self.output_dir}, but the upload to "
                    f"{self.publisher.repo_id} failed: {error}. Push it later with: "
                    f"ddpm-hub push {self.output_dir} --repo_id {self.publisher.repo_id}"
                )
        self.accelerator.wait_for_everyone()
        if push_error is not None:
            raise push_error
