"""The parts a run is built from, each decided from the configs in one place: the output folder, accelerate,
the Hub publisher, the UNet's memory options, EMA, the optimizer and its learning-rate schedule."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from .. import run_folder
from ..config import HubConfig, TrainConfig
from ..errors import SetupError

logger = logging.getLogger("ddpm_hub")


def check_output_dir(train: TrainConfig) -> None:
    """Refuse to train over a previous run, or into a folder that is not a run, unless the user said so."""
    run_folder.check_output_dir(
        train.output_dir,
        overwrite=train.overwrite_output_dir,
        resuming=train.resume_from_checkpoint is not None,
        logging_dir=train.logging_dir,
    )


def make_publisher(hub: HubConfig, output_dir: Path):
    """The Hub publisher of a pushing run (on the first process only: one uploader), else `None`."""
    if not hub.push_to_hub or int(os.environ.get("RANK", "0")) != 0:  # launchers stop the rest if it fails
        return None
    from ..hub import HubPublisher

    return HubPublisher.create(  # fails fast on a bad token or repo id
        output_dir,
        hub.hub_model_id,
        token=hub.hub_token,
        private=hub.hub_private_repo,
        revision=hub.hub_revision,
        push_checkpoints=hub.hub_push_checkpoints,
    )


def make_accelerator(run: TrainConfig, output_dir: Path) -> Accelerator:
    """accelerate as the flags say; refuses process layouts the loop does not support (`SetupError`)."""
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
    plugin = accelerator.state.deepspeed_plugin if accelerator.distributed_type == DistributedType.DEEPSPEED else None
    if plugin is not None and plugin.is_auto("train_micro_batch_size_per_gpu"):
        # The data source prepares its loader in a call of its own, where DeepSpeed cannot read the batch size.
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = run.train_batch_size
    return accelerator


def shards_parameters(accelerator: Accelerator) -> bool:
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = accelerator.state.deepspeed_plugin if accelerator.distributed_type == DistributedType.DEEPSPEED else None
    return plugin is not None and plugin.zero_stage == 3


def prepare_output_dir(accelerator: Accelerator, run: TrainConfig, resuming: bool) -> None:
    """Create the output folder; a run that starts over starts its own records (see `run_folder`), and with
    --overwrite_output_dir drops the previous run's checkpoints."""
    output_dir = Path(run.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            run_folder.start_fresh_records(output_dir, remove_checkpoints=run.overwrite_output_dir)
    accelerator.wait_for_everyone()


def configure_unet(unet: UNet2DModel, run: TrainConfig) -> UNet2DModel:
    """Memory options: gradient checkpointing, xformers attention, channels_last weights."""
    if run.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if run.enable_xformers_memory_efficient_attention:
        unet.enable_xformers_memory_efficient_attention()
    if run.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    return unet


def make_ema(unet: UNet2DModel, run: TrainConfig) -> EMAModel | None:
    if not run.use_ema:
        return None
    return EMAModel(
        unet.parameters(),
        decay=run.ema_max_decay,
        use_ema_warmup=True,
        inv_gamma=run.ema_inv_gamma,
        power=run.ema_power,
        foreach=True,
        model_cls=UNet2DModel,
        model_config=unet.config,
    )  # checkpointed as safetensors by save_checkpoint, not through accelerate's pickled custom state


def make_optimizer(unet: torch.nn.Module, run: TrainConfig, learning_rate: float, device: torch.device):
    return torch.optim.AdamW(
        unet.parameters(),
        lr=learning_rate,
        betas=(run.adam_beta1, run.adam_beta2),
        weight_decay=run.adam_weight_decay,
        eps=run.adam_epsilon,
        # One fused kernel (CUDA, CPU): it also skips a non-finite step on the device (train_step.apply_gradients).
        fused=device.type in ("cuda", "cpu"),
    )


def make_lr_scheduler(run: TrainConfig, optimizer, max_train_steps: int, num_processes: int):
    # accelerate steps a prepared LR scheduler once per process per optimizer step (and not on accumulation-only
    # steps), so warmup and decay are given in optimizer steps times processes.
    return get_scheduler(
        run.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=run.lr_warmup_steps * num_processes,
        num_training_steps=max_train_steps * num_processes,
    )
