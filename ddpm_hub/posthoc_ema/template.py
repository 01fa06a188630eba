"""A reconstruction becomes a normal pipeline: the run's exported pipeline (its scheduler, a latent run's VAE, the
class names) with the reconstructed UNet weights, written by the one atomic export, with a card recording sigma_rel.

The card and the settings travel as a trained pipeline's do: `training_config.json` (the run's settings, plus
`posthoc_ema_sigma_rel` and `posthoc_ema_step`) and `metrics.json` beside the pipeline, so `ddpm-hub push` rebuilds
the same card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..assembly import PipelineParts
from ..checkpointing import list_checkpoints
from ..export import export_pipeline
from ..files import write_json
from ..model_card import CONFIG_FILE, METRICS_FILE, card_info_for_run, write_model_card
from .reconstruct import Plan
from .snapshots import SNAPSHOT_DIR

# UNet settings that differ between two saves of one architecture (diffusers' bookkeeping).
_BOOKKEEPING = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")


def check_output_dir(run_dir: Path, output_dir: Path) -> None:
    """OUT must not be the run itself, nor another run (its pipeline would be replaced); a one-line `ValueError`."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {str(output_dir)!r} exists and is not a folder.")
    if output_dir.resolve() == run_dir.resolve():
        raise ValueError("--output_dir is the run itself, whose own pipeline it would replace; choose another folder.")
    if output_dir.is_dir() and (list_checkpoints(output_dir) or (output_dir / SNAPSHOT_DIR).is_dir()):
        raise ValueError(
            f"--output_dir {str(output_dir)!r} holds a training run, whose pipeline it would replace; choose another "
            "folder."
        )


def read_json(path: Path) -> dict[str, Any]:
    """A run's `training_config.json` or `metrics.json` ({} if it has none)."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON ({error}).") from None


def load_template(run_dir: Path, unet_config: dict | None, device: torch.device):
    """The run's exported `DDPMHubPipeline`, checked to hold the UNet the snapshots were taken of."""
    from ..pipeline import DDPMHubPipeline
    from ..safe_loading import check_local_model, weights_kwargs

    if not (run_dir / "model_index.json").is_file():
        raise ValueError(
            f"{run_dir} has no exported pipeline (model_index.json), which gives a reconstruction its scheduler (and "
            "a latent run's VAE); let the run finish (resume it with --resume_from_checkpoint latest) first."
        )
    check_local_model(run_dir, "RUN")
    pipeline = DDPMHubPipeline.from_pretrained(run_dir, **weights_kwargs()).to(device)
    pipeline.set_progress_bar_config(disable=True)
    if unet_config is not None:
        ours = {k: v for k, v in json.loads(json.dumps(dict(pipeline.unet.config))).items() if k not in _BOOKKEEPING}
        theirs = {k: v for k, v in unet_config.items() if k not in _BOOKKEEPING}
        changed = sorted(k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k])
        if changed:
            raise ValueError(
                f"the snapshots are of another UNet than {run_dir / 'unet'} (they differ in {', '.join(changed[:3])})."
            )
    return pipeline


@torch.no_grad()
def load_weights(unet: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy the reconstructed parameters into `unet` (every parameter, nothing else)."""
    names = [name for name, _ in unet.named_parameters()]
    if sorted(names) != sorted(weights):
        missing = sorted(set(names) - set(weights)) or sorted(set(weights) - set(names))
        raise ValueError(f"the snapshots do not hold the UNet's parameters (e.g. {missing[:2]}).")
    for name, parameter in unet.named_parameters():
        parameter.copy_(weights[name])


def export_reconstruction(
    pipeline,
    scheduler,
    output_dir: Path,
    plan: Plan,
    run_settings: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write `pipeline` (its UNet holding the reconstruction of `plan`, sampled with `scheduler`, the run's own) to
    `output_dir`, with its settings, metrics and card."""
    export_pipeline(PipelineParts.of(pipeline).replace(scheduler=scheduler), output_dir)
    settings = {
        **run_settings,
        "posthoc_ema_sigma_rel": round(plan.sigma_rel, 6),
        "posthoc_ema_gamma": round(plan.gamma, 4),
        "posthoc_ema_step": plan.step,
        "posthoc_ema_profile_error": round(plan.profile_error, 5),
        "posthoc_ema_snapshots": len({snapshot.path for snapshot, *_ in plan.terms}),
    }
    metrics = {"optimizer_steps": plan.step, **(metrics or {})}
    write_json(output_dir / CONFIG_FILE, settings)
    write_json(output_dir / METRICS_FILE, metrics)
    info = card_info_for_run(settings, metrics)
    info.has_sample_grid = False  # the run's grid shows other weights
    write_model_card(output_dir, info)
    return output_dir
