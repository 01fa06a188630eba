"""Quality measured while training: every `--eval_steps` / `--eval_epochs`, the EMA weights are sampled and scored
against the training data's cached reference statistics; FID/KID go to the trackers and `metrics.jsonl`, and
whenever FID improves the trainer exports the pipeline to `<output_dir>/best/` (through its one export path, so
`best/` is the same pipeline as the final one, class names included) and `save_best` records the score beside it.

The best score and the settings that produced it travel in each checkpoint's `training_state.json`, so a resumed
run only replaces `best/` with a genuinely better model, measured the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..choices import SAMPLE_METRICS, UPSCALER_METRICS
from ..files import write_json
from . import check_sample_count, parse_metrics
from .evaluate import generate_images, score, warn_if_few_samples
from .features import get_extractor

logger = logging.getLogger("ddpm_hub")

BEST_DIR = "best"
BEST_RESULT = "eval_results.json"


@dataclass
class Evaluation:
    """The scores of one evaluation, and whether FID improved on the best so far (then the caller saves best/)."""

    scores: dict[str, float]  # "fid", "kid_mean", ...
    improved: bool

    @property
    def metrics(self) -> dict[str, float]:
        """The scores as logged: `eval_fid`, `eval_kid_mean`, ..."""
        return {f"eval_{k}": v for k, v in self.scores.items()}


def _reference_channels(source) -> int:
    """Channels of a data source's reference pixels (a stream knows them; the others give one image cheaply)."""
    channels = getattr(source, "channels", None)
    return channels if channels is not None else source.reference_images(1)[0:1].shape[1]


class Evaluator:
    """Periodic evaluation of a training run; inactive (`enabled` is False) unless an eval interval is set.

    Args:
        run (`TrainConfig`): reads `eval_steps`, `eval_epochs`, `eval_num_samples`, `eval_sampler`,
            `eval_num_inference_steps`, `eval_features`, `eval_metrics`, `eval_batch_size` and `seed`.
        output_dir (`Path`): the run's folder (`best/` goes inside it).
    """

    def __init__(self, run, output_dir: Path):
        self.run, self.output_dir = run, Path(output_dir)
        self.enabled = bool(run.eval_steps or run.eval_epochs)
        self.metrics = parse_metrics(run.eval_metrics, "--eval_metrics")
        self.best: dict[str, Any] | None = None  # {"fid": ..., "step": ..., plus the settings}
        self.last: dict[str, Any] | None = None
        self.last_step: int | None = None
        self.reference = self.extractor = self.source = None
        self.sample_metrics = tuple(m for m in self.metrics if m in SAMPLE_METRICS)
        self.nll_images = None  # the reference pixels whose bits/dim "nll" measures
        self._upscaler_inputs = None  # (originals, low-resolution inputs) of a super-resolution run, read once
        if self.enabled:
            check_sample_count(run.eval_num_samples, run.eval_features, self.metrics, "--eval_num_samples")

    def settings(self) -> dict[str, Any]:
        """What must match for two scores to be compared."""
        return {
            "extractor": self.run.eval_features,
            "num_images": self.run.eval_num_samples,
            "sampler": self.run.eval_sampler,
            "num_inference_steps": self.run.eval_num_inference_steps,
            "seed": self.run.seed,
        }

    def prepare(self, source, resolution: int, device) -> None:
        """Load the extractor and the reference statistics of the training images (cached); main process only.

        `source` is the run's `DataSource`: its `identity()` keys the statistics, its `reference_images` are the
        pixels (read only when the cache has no statistics; a stream's first images, by a reader of their own, so
        the training stream's position is untouched). `resolution` is the generated images' side.
        """
        if not self.enabled:
            return
        from .reference import reference_statistics

        if "nll" in self.metrics:  # the first --eval_num_samples training images, the same at every evaluation
            self.nll_images = torch.as_tensor(source.reference_images(self.run.eval_num_samples)[:])
        self.source = source  # a super-resolution run upscales its first images
        if not self.sample_metrics:
            return
        warn_if_few_samples(self.run.eval_num_samples, self.metrics)
        self.extractor = get_extractor(self.run.eval_features, device, self.run.eval_batch_size)
        self.reference = reference_statistics(
            self.extractor, source.identity(), resolution=resolution, channels=_reference_channels(source),
            images=lambda: source.reference_images(None),
        )  # fmt: skip

    def due(self, global_step: int, *, epoch_end: int | None = None, final: bool = False) -> bool:
        """Whether to evaluate now: at every eval_steps-th step, after every eval_epochs-th epoch (1-based), and at
        the end of training (`final`), never twice at one step."""
        if not self.enabled or self.last_step == global_step:
            return False
        if final:
            return True
        if epoch_end is not None:
            return bool(self.run.eval_epochs) and epoch_end % self.run.eval_epochs == 0
        return bool(self.run.eval_steps) and global_step % self.run.eval_steps == 0

    @torch.no_grad()
    def evaluate(self, parts, global_step: int) -> Evaluation:
        """Sample the pipeline of `parts` (the caller swaps in the EMA weights) and score it; the best score is kept
        if FID improved. A latent model's `vae` (in `parts`) decodes the samples, so that pixels are scored; a
        super-resolution model upscales the training data's first `--eval_num_samples` images, downsampled, and is
        also scored against them (PSNR, SSIM, consistency: `evaluation/upscaler.py`). Returns the scores and whether
        FID improved (the caller then exports best/ and calls `save_best`)."""
        unet = parts.unet
        was_training = unet.training
        unet.eval()
        try:
            values = self._sample_scores(parts, global_step)
            if "nll" in self.metrics:
                values.update(self._likelihood(parts))
        finally:
            unet.train(was_training)
        self.last_step = global_step
        self.last = {"step": global_step, **values, **self.settings()}
        improved = "fid" in values and (self.best is None or values["fid"] < self.best["fid"])
        if improved:
            self.best = {"fid": values["fid"], "step": global_step, **self.settings()}
        return Evaluation(values, improved)

    def _sample_scores(self, parts, global_step: int) -> dict[str, float]:
        """The scores of the images the model makes: sampled from noise, or an upscaler's upscales."""
        pipeline = parts.pipeline(self.run.eval_sampler)
        fidelity = {}
        if pipeline.is_upscaler:
            images, fidelity = self._upscale(pipeline)
        elif self.sample_metrics:
            images = generate_images(
                pipeline, self.run.eval_num_samples, batch_size=self.run.eval_batch_size, seed=self.run.seed,
                num_inference_steps=self.run.eval_num_inference_steps, progress=f"Evaluating step {global_step}",
            )  # fmt: skip
        if not self.sample_metrics:
            return fidelity
        with torch.autocast(self.extractor.device.type, enabled=False):  # features in full precision
            features = self.extractor.extract(images)
        return {**fidelity, **score(features, self.reference, self.sample_metrics, seed=self.run.seed)}

    def _likelihood(self, parts) -> dict[str, float]:
        """The bits per dimension of the reference images under the training scheduler's process (in float32)."""
        from ..likelihood import negative_log_likelihood

        with torch.autocast(parts.unet.device.type, enabled=False):
            result = negative_log_likelihood(
                parts.pipeline(), self.nll_images, num_steps=self.run.eval_nll_steps,
                batch_size=self.run.eval_batch_size, seed=self.run.seed, progress=False,
            )  # fmt: skip
        return {"nll_bits_per_dim": result.bits_per_dim}

    def _upscale(self, pipeline) -> tuple[np.ndarray, dict[str, float]]:
        """A super-resolution model's upscales of the first training images, downsampled, and their fidelity."""
        from .upscaler import fidelity, low_res_inputs, upscale_images

        run = self.run
        if self._upscaler_inputs is None:  # the same images at every evaluation: read (a stream: decoded) once
            originals = np.asarray(self.source.reference_images(run.eval_num_samples)[: run.eval_num_samples])
            self._upscaler_inputs = originals, low_res_inputs(originals, pipeline.low_resolution)
        originals, low_res = self._upscaler_inputs
        images = upscale_images(
            pipeline, low_res, list(range(len(originals))), batch_size=run.eval_batch_size, seed=run.seed,
            num_inference_steps=run.eval_num_inference_steps,
        )  # fmt: skip
        return images, fidelity(images, originals, low_res, self.metrics)

    def save_best(self, folder: Path | None = None) -> None:
        """Beside the pipeline just exported to `folder` (`<output_dir>/best`): the best score and how it was
        measured."""
        folder = Path(folder) if folder is not None else self.output_dir / BEST_DIR
        write_json(folder / BEST_RESULT, {**self.best, "reference": self.reference.source})
        logger.info(
            "FID improved to %.4g at step %d: saved the pipeline to %s.", self.best["fid"], self.best["step"], BEST_DIR
        )

    def state(self) -> dict[str, Any]:
        """Stored in the checkpoint's training_state.json."""
        return {"best_fid": self.best} if self.best is not None else {}

    def restore(self, state: dict[str, Any]) -> None:
        """Keep the checkpoint's best score, unless it was measured differently (then it cannot be compared)."""
        best = state.get("best_fid")
        if best is None or not self.enabled:
            return
        stored = {k: best.get(k) for k in self.settings()}
        if stored != self.settings():
            logger.warning(
                "The checkpoint's best FID %.4g was measured with %s; this run evaluates with %s, so the two are not "
                "compared and best/ will be replaced by the first evaluation.", best["fid"], stored, self.settings(),
            )  # fmt: skip
            return
        self.best = best
        logger.info("Best FID so far: %.4g at step %d.", best["fid"], best["step"])

    def card_metrics(self) -> dict[str, Any]:
        """Final and best FID with their settings, for metrics.json and the model card."""
        if not self.enabled or self.last is None:
            return {}
        settings = self.settings()
        values = {
            f"final_{k}": round(v, 6)
            for k, v in self.last.items()
            if k
            in (
                "fid",
                "kid_mean",
                "kid_std",
                "precision",
                "recall",
                "inception_score_mean",
                "nll_bits_per_dim",
                *UPSCALER_METRICS,
            )  # fmt: skip
        }
        values["final_eval_step"] = self.last["step"]
        if self.best is not None:
            values.update(best_fid=round(self.best["fid"], 6), best_fid_step=self.best["step"])
        if self.sample_metrics:
            values["eval_settings"] = (
                f"{settings['extractor']}, {settings['num_images']} samples, {settings['sampler']} "
                f"{settings['num_inference_steps']} steps, reference: {self.reference.source} "
                f"({self.reference.num_images} images)"
            )
        if "nll" in self.metrics:
            steps = f"{self.run.eval_nll_steps} respaced steps" if self.run.eval_nll_steps else "every timestep"
            values["nll_settings"] = f"bits/dim of the first {len(self.nll_images)} training images, {steps}"
        return values
