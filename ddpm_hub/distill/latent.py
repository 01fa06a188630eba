"""Latent teachers: progressive distillation in the latent space of the teacher's own VAE.

A teacher with a `vae/` (trained by `train_unconditional.py --vae_name_or_path`) denoises latents, so its student
is distilled on latents too: `LatentDistillRound` is a `DistillRound` and a `LatentTrainer` at once. From the
latent trainer it takes the data (`LatentImages`: the training images encoded once by the VAE and kept in the latent
cache, so that the first round encodes and every later round, or a resumed one, reads the cache), the previews
decoded through the VAE, and the settings that describe a latent model (`training_config.json`, the card); from the
distiller the step, the student's scheduler and the scores, decoded here through the VAE as well. The student is
exported with the same `vae/` and latent scaling factor. The VAE is read from the TEACHER folder (a Hub teacher's
download holds it), never fetched on its own.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..latents import load_vae, read_vae_info
from ..latents.trainer import LatentTrainer
from .distiller import DistillRound


class LatentDistillRound(DistillRound, LatentTrainer):
    """One round of a latent teacher; see the module docstring (`DistillRound` first: its step and export win)."""

    def model_config(self) -> ModelConfig:
        """The teacher's UNet, trained on the latents of the TEACHER's `vae/`, scaled by the teacher's factor."""
        source = self.plan_round.vae_source
        index = json.loads((source / "model_index.json").read_text(encoding="utf-8"))
        return dataclasses.replace(
            super().model_config(),
            vae_name_or_path=str(source),
            vae_subfolder="vae",
            latent_scaling_factor=index.get("latent_scaling_factor"),
        )

    def pipeline_vae(self) -> dict[str, Any]:
        """The student is a latent pipeline: the VAE (from its CPU copy) and the teacher's latent scaling factor."""
        return {"vae": self.vae, "latent_scaling_factor": self.vae_info.scaling_factor}

    def image_size(self) -> int:
        return self.image_resolution

    def hyperparameters(self) -> dict[str, Any]:
        # The VAE as the user named the teacher (a Hub teacher's folder is a path in the Hub cache).
        return {**super().hyperparameters(), "vae": f"{self.distill.teacher}/vae"}


def saved_vae(folder: Path, index: dict[str, Any]) -> dict[str, torch.nn.Module | float]:
    """The `vae` and `latent_scaling_factor` of the latent pipeline saved in `folder` (its `model_index.json`)."""
    info = read_vae_info(str(folder), "vae", index.get("latent_scaling_factor"))
    return {"vae": load_vae(info), "latent_scaling_factor": info.scaling_factor}
