"""Improved DDPM (Nichol & Dhariwal 2021) as a part of a run: learned variances and the variational-bound losses.

    train_unconditional.py --variance_type learned_range --loss_type hybrid       # the paper's L_hybrid (eq. 16)
    train_unconditional.py --loss_type vlb                                        # L_vlb, importance-sampled t

`ImprovedDDPM` plugs into the `Trainer` at its hooks (`ddpm_hub.training.parts`): it checks the flags once they are
resolved (a learned variance needs the bound; the hybrid loss a learned variance; `--eval_metrics nll` a pixel
model), doubles the UNet's output channels for `learned_range` and records the `variance_type` in the training
scheduler (`shape_model`, so a pretrained UNet of the wrong shape is refused in one line), hands the step its loss
(`step_options`: a `likelihood.BoundObjective`, which draws the timesteps) and keeps the vlb timestep sampler's state
in every checkpoint (`state_dict`), so that a resumed run continues bit for bit. The math is in `ddpm_hub.likelihood`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .choices import parse_metrics
from .config import check_objective
from .defaults import resolve_model_defaults
from .likelihood import VARIANCE_TYPES, BoundObjective, bound_variance
from .training.parts import ModelShape, RunPart


def uses_improved_ddpm(model, run) -> bool:
    """Whether a run with these flags needs the part: a variance or bound loss asked for, a pretrained model (whose
    variance may be learned), or the likelihood measured during training."""
    return (
        model.variance_type is not None
        or model.loss_type != "simple"
        or model.pretrained_model_name_or_path is not None
        or "nll" in parse_metrics(run.eval_metrics, "--eval_metrics")
    )


class ImprovedDDPM(RunPart):
    """The part that trains learned variances and the bound; see the module docstring.

    Args:
        trains_denoiser (`bool`, defaults to `True`): `False` for a run that trains something else beside a saved
            diffusion model (a classifier of its x_t): the part then only shapes the plan of that model's UNet and
            scheduler, with no objective and no check of `--loss_type`, which such a run does not have.
    """

    name = "improved_ddpm"

    def __init__(self, *, trains_denoiser: bool = True):
        self.trains_denoiser = trains_denoiser
        self.variance_type = "fixed_small"
        self.objective: BoundObjective | None = None

    def check(self, configs):
        model, run = resolve_model_defaults(configs.model, configs.data.cache_dir), configs.run
        self.variance_type = model.variance_type
        if not self.trains_denoiser:
            return dataclasses.replace(configs, model=model)
        origin = "--variance_type" if configs.model.variance_type else "the pretrained model's variance_type"
        check_objective(model.variance_type, model.loss_type, origin)
        latent = model.vae_name_or_path is not None
        if model.loss_type != "simple" and model.rescale_betas_zero_snr and model.prediction_type == "epsilon":
            raise ValueError(
                f"--loss_type {model.loss_type} needs x_0 at every t, which an epsilon model cannot give at the last "
                "timestep of a zero-terminal-SNR schedule; use --prediction_type v_prediction."
            )
        if (run.eval_steps or run.eval_epochs) and latent and "nll" in parse_metrics(run.eval_metrics):
            raise ValueError(
                "--eval_metrics nll is the likelihood of 8-bit pixels; a latent model's VAE gives no exact likelihood "
                "of the images: leave nll out of --eval_metrics."
            )
        if model.loss_type != "simple":
            # L_0 of 8-bit pixels; latents are continuous, their decoder term a density.
            decoder = "continuous" if latent else "discretized"
            variance = bound_variance(model.variance_type)
            self.objective = BoundObjective(model.loss_type, variance, model.vlb_weight, decoder)
        return dataclasses.replace(configs, model=model)  # resolved: a pretrained model's scheduler is read once

    def shape_model(self, shape: ModelShape) -> ModelShape:
        if self.variance_type not in VARIANCE_TYPES:
            return shape  # a pretrained model's own variant of a fixed variance (fixed_small_log...): kept as it is
        overrides = {**shape.scheduler_overrides, "variance_type": self.variance_type}
        if self.variance_type != "learned_range":
            return shape.replace(scheduler_overrides=overrides)
        note = "learned variances (--variance_type learned_range) need twice the sample channels as outputs"
        return shape.replace(output_multiple=2, scheduler_overrides=overrides, notes=(*shape.notes, note))

    def step_options(self) -> dict[str, Any]:
        return {"objective": self.objective} if self.objective is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return self.objective.state_dict() if self.objective is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.objective is not None:
            self.objective.load_state_dict(state)
