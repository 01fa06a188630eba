"""The typed configuration of `ddpm-hub distill`: what to distil (`DistillConfig`), plus training's own data, run and
Hub configs, whose flags (data sources, learning rate, EMA, precision, --compile, checkpoints, logging, push) mean
here what they mean in `train_unconditional.py`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig, HubConfig, TrainConfig
from .rounds import is_power_of_two


@dataclass
class DistillConfig:
    """What to distil: the teacher, the step counts, the length of a round, and how each round is scored."""

    teacher: str = field(
        default=None,
        metadata={"help": "The ddpm-hub pipeline to distil: a saved folder or a Hub repo id (positional)."},
    )
    teacher_revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a Hub teacher."})
    start_steps: int = field(
        default=256, metadata={"help": "DDIM steps of the teacher in the first round (a power of two)."}
    )
    end_steps: int = field(default=4, metadata={"help": "DDIM steps of the final student (a power of two, >= 1)."})
    steps_per_round: int = field(
        default=2000,
        metadata={
            "help": "Optimizer steps per round (Salimans & Ho 2022 use 50k on CIFAR-10; 2000 suits a small model)."
        },
    )
    images_per_round: int | None = field(
        default=None,
        metadata={"help": "Instead of --steps_per_round: training images per round (rounded up to steps)."},
    )
    eval_rounds: bool = field(
        default=True,
        metadata={
            "help": "After the last round, score (--eval_metrics, --eval_num_samples, --eval_features) the student, "
            "the teacher with DDIM and with DPM-Solver++ at the student's steps, and the teacher at "
            "--eval_teacher_steps."
        },
    )
    eval_every_round: bool = field(
        default=False,
        metadata={
            "help": "Score every round, not only the last (each table costs about as much sampling as a round of "
            "training on a CPU; the teacher's rows are computed once)."
        },
    )
    eval_teacher_steps: int = field(
        default=64, metadata={"help": "DDIM steps of the teacher's reference score (50+, the quality to keep)."}
    )

    def validate(self) -> None:
        if not self.teacher:
            raise ValueError("give the TEACHER to distil: ddpm-hub distill TEACHER --output_dir OUT.")
        if self.end_steps < 1:
            raise ValueError(f"--end_steps must be at least 1, got {self.end_steps}.")
        for name in ("start_steps", "end_steps"):
            if not is_power_of_two(getattr(self, name)):
                raise ValueError(f"--{name} must be a power of two (1, 2, 4, ... 256), got {getattr(self, name)}.")
        if self.start_steps <= self.end_steps:
            raise ValueError(
                f"--start_steps {self.start_steps} must be more than --end_steps {self.end_steps}: each round halves "
                "the steps, from the teacher's to the student's."
            )
        for name in ("steps_per_round", "images_per_round", "eval_teacher_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be positive, got {value}.")


def check_teacher_folder(folder: Path, flag: str) -> dict:
    """The `model_index.json` of a teacher folder, or a one-sentence `ValueError` saying why it is not a pipeline."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{flag} {str(folder)!r} is not a ddpm-hub pipeline: it has no model_index.json.")
    try:
        components = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{flag} {str(folder)!r} has an unreadable model_index.json: {error}") from error
    for name in ("unet", "scheduler"):
        if name not in components or not (folder / name).is_dir():
            raise ValueError(f"{flag} {str(folder)!r} is not a ddpm-hub pipeline: it has no {name}/.")
    if components.get("low_resolution") is not None:
        raise ValueError(f"{flag} {str(folder)!r} is a super-resolution model: distilling upscalers is not supported.")
    if is_latent_pipeline(components) and not (folder / "vae" / "config.json").is_file():
        raise ValueError(f"{flag} {str(folder)!r} is a latent pipeline without its vae/ folder.")
    return components


# The files that make a teacher what it is: its weights, their configs, its VAE (a latent teacher), its classes.
TEACHER_FILES = (
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)


def teacher_fingerprint(folder: Path) -> str:
    """The sha256 of a teacher pipeline's files (`TEACHER_FILES`, those it has): every round records it, and a resumed
    distillation must give the same teacher (a folder or Hub repo may hold other weights under the same name)."""
    digest = hashlib.sha256()
    for name in TEACHER_FILES:
        path = folder / name
        if path.is_file():
            digest.update(f"{name}\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def is_latent_pipeline(index: dict) -> bool:
    """Whether a `model_index.json` names a `vae` (diffusers writes `[null, null]` for an absent optional one)."""
    vae = index.get("vae")
    return isinstance(vae, (list, tuple)) and any(vae)


def check_latent_teacher(folder: Path, components: dict, unet_config: dict, flag: str) -> None:
    """A latent teacher's `vae/` is an autoencoder ddpm-hub trains on, and its UNet takes that VAE's latents."""
    from ..latents import VAE_CLASSES, read_vae_info

    try:
        info = read_vae_info(str(folder), "vae", components.get("latent_scaling_factor"))
    except ValueError as error:
        raise ValueError(f"{flag} {str(folder)!r} has a vae/ that is not one of {', '.join(VAE_CLASSES)}.") from error
    have = (unet_config.get("in_channels", 3), unet_config.get("out_channels", 3))
    if have != (info.latent_channels, info.latent_channels):
        raise ValueError(
            f"{flag} {str(folder)!r}: its UNet has in/out channels {have[0]}/{have[1]}, but the latents of its "
            f"vae/ have {info.latent_channels} channels."
        )


CONFIG_TYPES = (DistillConfig, DataConfig, TrainConfig, HubConfig)
