"""Training of unconditional DDPMs with accelerate: the body of `train_unconditional.py`.

    accelerate launch train_unconditional.py                       # small model, built-in emoji, a few CPU minutes
    accelerate launch train_unconditional.py --model ddpm-64 --dataset_name huggan/smithsonian_butterflies_subset \\
        --resolution 64 --train_batch_size 64 --mixed_precision bf16 --num_epochs 100

`train` is one function in accelerate's canonical shape (prepare -> accumulate -> backward -> side work when
gradients sync); checkpoints, previews, export and Hub uploads are small helpers in their own modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration, set_seed
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from . import __version__
from .arguments import one_line, parse_config
from .checkpointing import SignalStop, list_checkpoints, load_checkpoint, resolve_checkpoint, save_checkpoint
from .config import CONFIG_TYPES, DataConfig, HubConfig, ModelConfig, TrainConfig
from .data import ImageBatchDataset, collate_uint8, load_images, split_batch
from .data.stream import open_stream, stream_batches_per_epoch
from .evaluation.during_training import Evaluator
from .export import ema_weights, export_pipeline, sample_grid
from .files import NonFiniteWeightsError, WriteError, save_image, write_json
from .labels import drop_labels
from .model_card import CONFIG_FILE, METRICS_FILE, SAMPLE_GRID, card_info_for_run, write_model_card
from .models import check_resolution, resolve_spec
from .schedules import make_noise_scheduler
from .train_step import (
    CompileTimer,
    DivergedError,
    StepMonitor,
    TrainStep,
    apply_gradients,
    choose_compile_mode,
    default_compile_cache_dir,
    diverged_message,
    ema_update,
    use_compile_cache,
)

logger = logging.getLogger("ddpm_hub")

METRICS_LOG = "metrics.jsonl"


@dataclass
class ModelPlan:
    """The UNet to build and the noise schedule to train it with, decided before anything heavy happens."""

    unet_config: dict[str, Any]
    noise_scheduler: DDPMScheduler
    resolution: int
    description: str
    pretrained: str | None = None
    learning_rate: float = 1e-4  # used when --learning_rate is not given

    def condition_on(self, num_classes: int) -> None:
        """Give a new UNet one class embedding per class plus the null class; a pretrained one must match already."""
        num_class_embeds = num_classes + 1 if num_classes else None
        if self.pretrained is None:
            self.unet_config["num_class_embeds"] = num_class_embeds
            return
        have = self.unet_config.get("num_class_embeds")
        if have != num_class_embeds:
            classes = lambda n: f"{n - 1} classes" if n else "no classes (unconditional)"  # noqa: E731
            raise ValueError(
                f"--pretrained_model_name_or_path {self.pretrained!r} has {classes(have)}, the training data "
                f"{classes(num_class_embeds)}; fine-tune on data with the same classes."
            )

    def build(self, cache_dir: str | None = None) -> UNet2DModel:
        if self.pretrained is None:
            return UNet2DModel.from_config(self.unet_config)
        unet = UNet2DModel.from_pretrained(self.pretrained, subfolder=_unet_subfolder(self.pretrained), cache_dir=cache_dir)
        unet.register_to_config(sample_size=self.resolution)
        return unet


def _unet_subfolder(path: str) -> str | None:
    # A pipeline (folder or Hub repo) keeps its UNet in unet/; a bare model folder does not.
    local = Path(path)
    if local.is_dir():
        return "unet" if (local / "unet").is_dir() else None
    return "unet"


def _check_resolution(unet_config: dict[str, Any], resolution: int) -> None:
    levels = unet_config.get("block_out_channels", inspect.signature(UNet2DModel.__init__).parameters["block_out_channels"].default)
    check_resolution(resolution, len(levels))


def plan_model(config: ModelConfig, cache_dir: str | None = None) -> ModelPlan:
    """Resolve --model / --model_config_name_or_path / --pretrained_model_name_or_path and the schedule flags."""
    if config.pretrained_model_name_or_path is not None:
        source = config.pretrained_model_name_or_path
        try:
            unet_config = dict(UNet2DModel.load_config(source, subfolder=_unet_subfolder(source), cache_dir=cache_dir))
            scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler", cache_dir=cache_dir)
        except (OSError, ValueError) as error:
            raise ValueError(f"--pretrained_model_name_or_path {source!r} is not a loadable pipeline: {error}") from error
        pretrained = DDPMScheduler.from_config(scheduler_config).config
        if config.ddpm_beta_schedule or config.ddpm_num_steps or config.rescale_betas_zero_snr:
            # A new noise schedule: built like a fresh one, keeping the pretrained scheduler's other settings.
            kept = {k: pretrained[k] for k in ("beta_start", "beta_end", "variance_type", "clip_sample", "timestep_spacing")}
            noise_scheduler = make_noise_scheduler(
                config.ddpm_beta_schedule or pretrained.beta_schedule,
                config.ddpm_num_steps or pretrained.num_train_timesteps,
                config.prediction_type or pretrained.prediction_type,
                rescale_betas_zero_snr=config.rescale_betas_zero_snr or pretrained.rescale_betas_zero_snr,
                **kept,
            )
        else:
            noise_scheduler = DDPMScheduler.from_config(
                scheduler_config, prediction_type=config.prediction_type or pretrained.prediction_type
            )
        resolution = config.resolution or unet_config["sample_size"]
        _check_resolution(unet_config, resolution)
        return ModelPlan(unet_config, noise_scheduler, resolution, f"fine-tuned from {source}", pretrained=source)

    noise_scheduler = make_noise_scheduler(
        config.ddpm_beta_schedule or "cosine",
        config.ddpm_num_steps or 1000,
        config.prediction_type or "v_prediction",
        rescale_betas_zero_snr=config.rescale_betas_zero_snr,
    )
    if config.model_config_name_or_path is not None:
        source = config.model_config_name_or_path
        path = Path(source)
        try:
            if path.is_file():
                unet_config = json.loads(path.read_text(encoding="utf-8"))
            else:
                unet_config = dict(UNet2DModel.load_config(source, subfolder=_unet_subfolder(source), cache_dir=cache_dir))
        except (OSError, ValueError) as error:
            raise ValueError(f"--model_config_name_or_path {source!r} is not a UNet2DModel config: {error}") from error
        resolution = config.resolution or unet_config.get("sample_size") or 64
        _check_resolution(unet_config, resolution)
        unet_config["sample_size"] = resolution
        return ModelPlan(unet_config, noise_scheduler, resolution, f"config {source}")

    spec = resolve_spec(
        config.model,
        config.resolution,
        model_channels=config.model_channels,
        channel_mult=config.channel_mult,
        num_res_blocks=config.num_res_blocks,
        attention_resolutions=config.attention_resolutions,
        dropout=config.dropout,
    )
    return ModelPlan(spec.unet_kwargs(), noise_scheduler, spec.resolution, f"preset {config.model}", learning_rate=spec.learning_rate)


def check_output_dir(train: TrainConfig) -> None:
    """Refuse to train over a previous run unless the user said what to do with it."""
    output_dir = Path(train.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {train.output_dir!r} exists and is not a folder.")
    previous = list_checkpoints(output_dir) or (output_dir / "model_index.json").exists()
    if previous and train.resume_from_checkpoint is None and not train.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {train.output_dir!r} already holds a training run; pass --resume_from_checkpoint latest "
            "to continue it, --overwrite_output_dir to start over, or choose another --output_dir."
        )


def hyperparameters(configs, plan: ModelPlan, **derived) -> dict[str, Any]:
    """Every setting of the run, flat and tracker-friendly (scalars and strings only)."""
    values: dict[str, Any] = {}
    for config in configs:
        for key, value in dataclasses.asdict(config).items():
            if key == "hub_token":
                continue  # never logged
            values[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    values.update(
        resolution=plan.resolution,
        model_source=plan.description,
        beta_schedule=plan.noise_scheduler.config.beta_schedule,
        num_train_timesteps=plan.noise_scheduler.config.num_train_timesteps,
        prediction_type=plan.noise_scheduler.config.prediction_type,
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
    training process should use the cores it is allowed to run on.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    launched = "ACCELERATE_DYNAMO_BACKEND" in os.environ  # set by `accelerate launch`
    if accelerator.device.type == "cpu" and accelerator.num_processes == 1 and launched and torch.get_num_threads() == 1 < cores:
        torch.set_num_threads(cores)
        logger.info(
            "accelerate launch limited this CPU run to 1 thread; using %d (choose with --num_cpu_threads_per_process).", cores
        )


def setup_logging(accelerator: Accelerator, output_dir: Path) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("diffusers", "datasets", "accelerate", "huggingface_hub", "httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "ddpm_hub_run_log", False)]:
        root.removeHandler(handler)  # a previous run in this process
        handler.close()
    if accelerator.is_main_process:
        handler = logging.FileHandler(output_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.ddpm_hub_run_log = True
        root.addHandler(handler)
    else:
        logging.getLogger().setLevel(logging.ERROR)


def shards_parameters(accelerator: Accelerator) -> bool:
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = accelerator.state.deepspeed_plugin if accelerator.distributed_type == DistributedType.DEEPSPEED else None
    return plugin is not None and plugin.zero_stage == 3


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


class SetupError(ValueError):
    """Bad input found before training started: reported in one line, exit status 2."""


class PushError(RuntimeError):
    """Training succeeded and its output is saved, but the Hub upload failed after its retries."""


@contextlib.contextmanager
def reported_as_setup_errors():
    try:
        yield
    except ValueError as error:
        raise SetupError(str(error)) from error


def train(model_config: ModelConfig, data: DataConfig, run: TrainConfig, hub: HubConfig) -> Path:
    """Train a DDPM as the configs say; returns the output folder holding the saved pipeline."""
    run_start = time.perf_counter()
    # 1. Everything that can be checked cheaply is checked before any data or weights are touched.
    with reported_as_setup_errors():
        check_output_dir(run)
        plan = plan_model(model_config, data.cache_dir)
        output_dir = Path(run.output_dir)
        checkpoint = resolve_checkpoint(output_dir, run.resume_from_checkpoint)
        evaluator = Evaluator(run, output_dir)  # FID & co. every --eval_steps / --eval_epochs; off by default
        publisher = None
        if hub.push_to_hub and int(os.environ.get("RANK", "0")) == 0:  # one uploader; launchers stop the rest if it fails
            from .hub import HubPublisher

            publisher = HubPublisher.create(  # fails fast on a bad token or repo id
                output_dir,
                hub.hub_model_id,
                token=hub.hub_token,
                private=hub.hub_private_repo,
                revision=hub.hub_revision,
                push_checkpoints=hub.hub_push_checkpoints,
            )

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        # Launched as several processes on a machine without CUDA: accelerate only uses gloo DDP when told the
        # run is on the CPU; otherwise every process would train alone and write the same files.
        cpu=world_size > 1 and not torch.cuda.is_available(),
        gradient_accumulation_steps=run.gradient_accumulation_steps,
        mixed_precision=run.mixed_precision,
        log_with=None if run.logger == "none" else run.logger,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / run.logging_dir)),
        # The shuffle order is a function of (seed, epoch): resuming can skip to a batch without replaying the epoch.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=run.seed),
    )
    if accelerator.num_processes != world_size:
        raise SetupError(f"{world_size} processes were launched but accelerate set up {accelerator.num_processes}.")
    if shards_parameters(accelerator):
        # EMA, previews and export read the whole UNet on one process; with sharded parameters each of those would
        # need its own collective gather. DDP and ZeRO 1-2 keep whole replicas (a 114M UNet fits on any GPU).
        raise SetupError(
            "FSDP and DeepSpeed ZeRO-3 shard the UNet's parameters, which train_unconditional.py does not support; "
            "use DDP (accelerate launch --multi_gpu) or DeepSpeed ZeRO stage 1 or 2."
        )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if run.overwrite_output_dir and checkpoint is None:
            for old in list_checkpoints(output_dir):
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    setup_logging(accelerator, output_dir)
    use_available_cpu_threads(accelerator)
    if run.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # 2. Data: decoded once (main process first, the others reuse its cache).
    channels = plan.unet_config.get("in_channels", 3)
    streamed = data.is_streamed
    with reported_as_setup_errors(), accelerator.main_process_first():
        images = open_stream(data, plan.resolution, channels, accelerator) if streamed else load_images(
            data.dataset_name,
            dataset_config_name=data.dataset_config_name,
            train_data_dir=data.train_data_dir,
            image_column=data.image_column,
            cache_dir=data.cache_dir,
            resolution=plan.resolution,
            channels=channels,
            center_crop=data.center_crop,
            max_train_samples=data.max_train_samples,
            seed=run.seed,
            num_proc=data.preprocessing_num_workers,
            class_conditional=data.class_conditional,
            class_column=data.class_column,
        )
        plan.condition_on(images.num_classes)
    if accelerator.is_main_process:
        with reported_as_setup_errors():
            if streamed and evaluator.enabled:
                raise SetupError(
                    "--eval_steps/--eval_epochs read the training images up front; with streamed data "
                    "evaluate afterwards: ddpm-hub eval MODEL --reference SHARDS."
                )
            evaluator.prepare(images, data, plan.resolution, accelerator.device)  # cached reference statistics
    if streamed:
        with reported_as_setup_errors():
            batches_per_epoch = stream_batches_per_epoch(images, run, accelerator)
    else:
        batches_per_epoch = len(images) // (run.train_batch_size * accelerator.num_processes)
    if batches_per_epoch == 0:
        raise SetupError(
            f"The data set has {len(images)} images, fewer than one batch of {run.train_batch_size} x "
            f"{accelerator.num_processes} processes; lower --train_batch_size."
        )
    train_dataloader = None if streamed else torch.utils.data.DataLoader(
        ImageBatchDataset(images),
        batch_size=run.train_batch_size,
        shuffle=True,
        drop_last=True,  # equal, static batch shapes: no recompiles, even DDP shards
        collate_fn=collate_uint8,
        num_workers=data.dataloader_num_workers or 0,
        generator=torch.Generator().manual_seed(run.seed),  # iterators draw from it, not from the global RNG
        pin_memory=torch.cuda.is_available(),
    )

    # 3. Model, EMA, optimizer and LR schedule. Same initial weights on every process; different noise per process.
    set_seed(run.seed)
    with reported_as_setup_errors():
        unet = plan.build(data.cache_dir)
    set_seed(run.seed, device_specific=True)
    noise_scheduler = plan.noise_scheduler
    if run.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if run.enable_xformers_memory_efficient_attention:
        unet.enable_xformers_memory_efficient_attention()
    channels_last = run.channels_last
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    ema = None
    if run.use_ema:
        ema = EMAModel(
            unet.parameters(),
            decay=run.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=run.ema_inv_gamma,
            power=run.ema_power,
            foreach=True,
            model_cls=UNet2DModel,
            model_config=unet.config,
        )  # checkpointed as safetensors by save_checkpoint, not through accelerate's pickled custom state

    steps_per_epoch = math.ceil(batches_per_epoch / run.gradient_accumulation_steps)
    max_train_steps = run.max_train_steps or run.num_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    total_batch_size = run.train_batch_size * accelerator.num_processes * run.gradient_accumulation_steps
    learning_rate = (run.learning_rate or plan.learning_rate) * (total_batch_size if run.scale_lr else 1)
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=learning_rate,
        betas=(run.adam_beta1, run.adam_beta2),
        weight_decay=run.adam_weight_decay,
        eps=run.adam_epsilon,
        # One fused kernel (CUDA, CPU): it also skips a non-finite step on the device (train_step.apply_gradients).
        fused=accelerator.device.type in ("cuda", "cpu"),
    )
    # accelerate steps a prepared LR scheduler once per process per optimizer step (and not on accumulation-only
    # steps), so warmup and decay are given in optimizer steps times processes.
    lr_scheduler = get_scheduler(
        run.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=run.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    if streamed:  # each process reads its own shards: the loader is not prepared (see ddpm_hub.data.stream)
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
        with reported_as_setup_errors():
            images.make_loader(accelerator, run.train_batch_size, run.seed)
    else:
        unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, train_dataloader, lr_scheduler)
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.to(accelerator.device)
    base_unet = accelerator.unwrap_model(unet)
    compile_mode = None
    if run.compile:
        compile_mode = choose_compile_mode(
            run.compile_mode, accelerator.device, accelerator.num_processes, run.gradient_accumulation_steps
        )
        cache = use_compile_cache(run.compile_cache_dir or default_compile_cache_dir())
        logger.info("Compiling the training step (backend %s, mode %s; cache %s).", run.compile_backend, compile_mode, cache)
    # The step function is compiled, not the UNet: checkpoints keep plain parameter names, so a run may be resumed
    # with or without --compile.
    train_step = TrainStep(
        unet,
        noise_scheduler,
        accelerator,
        snr_gamma=model_config.snr_gamma or None,
        random_flip=data.random_flip,
        channels_last=channels_last,
        compile_mode=compile_mode,
        compile_backend=run.compile_backend,
    )
    if images.num_classes:
        train_step.drop_labels = lambda labels: drop_labels(labels, model_config.class_dropout_prob, images.num_classes)

    # 4. Resume: restore every state, then start at the recorded data position (skipped by index, not loaded).
    global_step, first_epoch, resume_batches = 0, 0, 0
    if checkpoint is not None:
        with reported_as_setup_errors():
            state = load_checkpoint(accelerator, checkpoint, model=base_unet, ema=ema)
        if ema is not None:
            ema.to(accelerator.device)  # loaded onto the CPU
        global_step = state["global_step"]
        evaluator.restore(state)
        if streamed:
            images.load_state_dict(state.get("data_position", {}))
        first_epoch, step_in_epoch = divmod(global_step, steps_per_epoch)
        resume_batches = step_in_epoch * run.gradient_accumulation_steps
        if state.get("steps_per_epoch") != steps_per_epoch:
            logger.warning(
                "The checkpoint was made with %s steps per epoch, this run has %s (batch size, data or number of "
                "processes changed): the data position is approximate.", state.get("steps_per_epoch"), steps_per_epoch
            )
        logger.info("Resumed from %s at step %d (epoch %d, batch %d).", checkpoint, global_step, first_epoch, resume_batches)
    elif ema is not None:
        ema.to(accelerator.device)

    hparams = hyperparameters(
        (model_config, data, run, hub),
        plan,
        dataset_size=images.num_images if streamed else len(images),
        skipped_images=images.num_skipped,
        num_processes=accelerator.num_processes,
        total_batch_size=total_batch_size,
        steps_per_epoch=steps_per_epoch,
        max_train_steps=max_train_steps,
        num_epochs_effective=num_epochs,
        unet_parameters=sum(p.numel() for p in base_unet.parameters()),
        learning_rate_effective=learning_rate,
        mixed_precision_effective=accelerator.mixed_precision,
        compile_mode_effective=compile_mode or "none",
        num_classes=images.num_classes,
    )
    if accelerator.is_main_process:
        write_json(output_dir / CONFIG_FILE, hparams)
        accelerator.init_trackers("train_unconditional", config=hparams)
    logger.info(
        "Training %s (%.1fM parameters) at %dpx on %s images of %s (%d unreadable skipped): %d steps, %d epochs, "
        "batch %d per device x %d processes x %d accumulation = %d, precision %s, on %s.",
        plan.description, hparams["unet_parameters"] / 1e6, plan.resolution, hparams["dataset_size"], images.source,
        images.num_skipped, max_train_steps, num_epochs, run.train_batch_size, accelerator.num_processes,
        run.gradient_accumulation_steps, total_batch_size, accelerator.mixed_precision, accelerator.device,
    )  # fmt: skip

    def training_state(epoch: int) -> dict[str, Any]:
        return dict(
            global_step=global_step, epoch=epoch, steps_per_epoch=steps_per_epoch, total_batch_size=total_batch_size,
            **evaluator.state(), **({"data_position": images.state_dict()} if streamed else {}),
        )  # fmt: skip

    def preview(tag: str) -> Any:
        with ema_weights(ema, base_unet), accelerator.autocast():
            grid = sample_grid(
                base_unet,
                noise_scheduler,
                num_images=run.eval_batch_size,
                sampler=run.preview_sampler,
                num_inference_steps=run.ddpm_num_inference_steps,
                seed=run.seed,
                label_names=images.label_names,
            )
        save_image(grid, output_dir / "samples" / f"{tag}.png")
        log_grid(accelerator, grid, global_step)
        return grid

    def fail_if_diverged(step: int | None) -> None:
        # Raised on every process alike (the flag follows the all-reduced gradients), before anything is saved.
        if step is not None:
            progress.close()
            accelerator.end_training()
            if publisher is not None:
                publisher.close()
            raise DivergedError(diverged_message(step, run.max_nonfinite_steps, learning_rate))

    def checkpoint_now() -> Path:
        fail_if_diverged(monitor.diverged())
        return save_checkpoint(
            accelerator, output_dir, training_state(epoch), run.checkpoints_total_limit, model=base_unet, ema=ema
        )
    def evaluate() -> None:
        with ema_weights(ema, base_unet), accelerator.autocast():
            record_metrics(accelerator, output_dir, global_step, evaluator.evaluate(base_unet, noise_scheduler, global_step))

    def export() -> None:
        fail_if_diverged(monitor.diverged())
        with ema_weights(ema, base_unet):
            export_pipeline(base_unet, noise_scheduler, output_dir, label_names=images.label_names)

    # 5. The loop.
    progress = tqdm(
        total=max_train_steps, initial=global_step, desc="Training", disable=not accelerator.is_local_main_process
    )
    monitor = StepMonitor(accelerator.device, global_step, run.max_nonfinite_steps)
    throughput = ThroughputMeter(total_batch_size, accelerator.device)
    compile_timer = CompileTimer(run.compile, accelerator.device)
    last_loss = float("nan")
    stopped_by = None
    grid = None
    epoch = first_epoch
    with SignalStop() as stop:
        for epoch in range(first_epoch, num_epochs):
            unet.train()
            epoch_start = time.perf_counter()
            if streamed:
                batches = images.epoch_batches(epoch, resume_batches if epoch == first_epoch else 0)
            else:
                train_dataloader.set_epoch(epoch)
                batches = train_dataloader
            if not streamed and epoch == first_epoch and resume_batches:
                batches = accelerator.skip_first_batches(train_dataloader, resume_batches)
            for batch in batches:
                batch, class_labels = split_batch(batch)
                with accelerator.accumulate(unet):
                    monitor.add_loss(train_step(batch, class_labels))  # stays on the device: no host sync per step
                    if accelerator.sync_gradients:
                        finite = apply_gradients(accelerator, unet, optimizer, lr_scheduler, run.max_grad_norm)
                if not accelerator.sync_gradients:
                    continue
                global_step += 1
                monitor.end_step(finite)
                if ema is not None:
                    ema_update(ema, base_unet.parameters(), finite)
                progress.update(1)
                compile_seconds = compile_timer.first_step_done()
                if compile_seconds is None:
                    throughput.step()
                else:
                    throughput.restart()  # images/s leaves compilation out
                    record_metrics(accelerator, output_dir, global_step, {"compile_seconds": compile_seconds})

                at_log_step = global_step % run.logging_steps == 0 or global_step == max_train_steps
                if at_log_step:
                    report = monitor.read(accelerator)
                    mean_loss = report.mean_loss
                    logs = {
                        "loss": mean_loss,
                        "lr": lr_scheduler.get_last_lr()[0],
                        "images_per_second": throughput.read(),
                        "epoch": epoch,
                        "nonfinite_steps": report.nonfinite_steps,
                    }
                    if report.nonfinite_steps:
                        logger.warning(
                            "Skipped %d of the last steps: non-finite loss or gradient norm (weights, optimizer "
                            "and EMA left as they were).", report.nonfinite_steps
                        )
                    if ema is not None:
                        logs["ema_decay"] = ema.cur_decay_value
                    if torch.cuda.is_available():
                        logs["gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
                    record_metrics(accelerator, output_dir, global_step, logs)
                    fail_if_diverged(report.diverged_at)
                    progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{logs['lr']:.2e}")
                    if math.isfinite(mean_loss):
                        last_loss = mean_loss

                with throughput.paused():
                    if evaluator.due(global_step) and accelerator.is_main_process:
                        evaluate()  # before the checkpoint, which keeps the best score
                    if global_step % run.checkpointing_steps == 0:
                        saved = checkpoint_now()
                        if publisher is not None and accelerator.is_main_process:
                            publisher.push_checkpoint_async(saved)
                    if run.save_images_steps and global_step % run.save_images_steps == 0 and accelerator.is_main_process:
                        grid = preview(f"step-{global_step:07d}")
                if accelerator.num_processes == 1:
                    stopped_by = stop.received
                elif at_log_step:
                    # One process alone may have seen the signal: agree where the processes synchronise anyway.
                    if stop.received:
                        accelerator.set_trigger()
                    if accelerator.check_trigger():
                        stopped_by = stop.received or "a signal on another process"
                if stopped_by:
                    break
                if global_step >= max_train_steps:
                    break

            if stopped_by:
                break
            record_metrics(accelerator, output_dir, global_step, {"epoch": epoch, "epoch_seconds": time.perf_counter() - epoch_start})
            last_epoch = epoch == num_epochs - 1 or global_step >= max_train_steps
            with throughput.paused():
                if accelerator.is_main_process:
                    if evaluator.due(global_step, epoch_end=epoch + 1):
                        evaluate()
                    if (epoch + 1) % run.save_images_epochs == 0 or last_epoch:
                        grid = preview(f"step-{global_step:07d}")
                    if (epoch + 1) % run.save_model_epochs == 0 and not last_epoch:
                        export()
                        if publisher is not None:
                            publisher.push_async(f"Epoch {epoch}, step {global_step}")
                accelerator.wait_for_everyone()
            if global_step >= max_train_steps:
                break
    progress.close()

    # 6. Wrap up: a final evaluation and checkpoint (to continue later), then the pipeline, the card, and the upload.
    if not stopped_by and accelerator.is_main_process and evaluator.due(global_step, final=True):
        evaluate()
    if not (output_dir / f"checkpoint-{global_step}").exists():
        checkpoint_now()
    if stopped_by:
        logger.warning(
            "Stopped by %s at step %d; resume with --resume_from_checkpoint latest.", stopped_by, global_step
        )
        accelerator.end_training()
        if publisher is not None:
            publisher.close()
        return output_dir
    if accelerator.is_main_process:
        export()
        if grid is None:
            grid = preview(f"step-{global_step:07d}")
        save_image(grid, output_dir / SAMPLE_GRID)
        metrics = {
            "final_loss": round(last_loss, 5),
            "optimizer_steps": global_step,
            "images_seen": global_step * total_batch_size,
            "training_minutes": round((time.perf_counter() - run_start) / 60, 2),
            "nonfinite_steps": monitor.total_skipped,
            **evaluator.card_metrics(),
        }
        write_json(output_dir / METRICS_FILE, metrics)
        write_model_card(output_dir, card_info_for_run(hparams, metrics, publisher.repo_id if publisher else None))
        logger.info("Saved the pipeline to %s", output_dir)
    push_error = None
    if publisher is not None:
        try:
            publisher.push_final(f"Training finished at step {global_step}")
        except Exception as error:  # reported after every process has finished, so none is left waiting
            push_error = PushError(
                f"training finished and the pipeline is saved in {output_dir}, but the upload to "
                f"{publisher.repo_id} failed: {error}. Push it later with: "
                f"ddpm-hub push {output_dir} --repo_id {publisher.repo_id}"
            )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if push_error is not None:
        raise push_error
    return output_dir


def main(argv: list[str] | None = None) -> int:
    model_config, data, run, hub = parse_config(
        CONFIG_TYPES,
        argv,
        prog="train_unconditional.py",
        description="Train an unconditional DDPM image model (run with `accelerate launch`).",
    )
    try:
        train(model_config, data, run, hub)
    except (SetupError, PushError, DivergedError, NonFiniteWeightsError, WriteError) as error:
        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()  # end the progress bar's line, so that the error is a line of its own
        print(f"train_unconditional.py: error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, SetupError) else 1
    return 0
