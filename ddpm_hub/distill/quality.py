"""How good a round's student is, next to what its teacher does with the same budget and with a large one.

After each round, four samplers are scored on the same seeds against the training data's reference statistics
(the offline extractor of `ddpm_hub.evaluation` by default): the student with DDIM at its N steps, the teacher with
DDIM at N steps (what distillation must beat), the teacher with DPM-Solver++ at N steps (the strongest
training-free rival), and the teacher with DDIM at `--eval_teacher_steps` (the quality distillation should keep).
"""

from __future__ import annotations

from typing import Any

import torch

from ..assembly import PipelineParts
from ..evaluation import parse_metrics
from ..evaluation.evaluate import generate_images, score
from ..evaluation.features import get_extractor
from ..evaluation.reference import reference_statistics
from ..pipeline_steps import scheduler_from_name
from .rounds import DDIM_OVERRIDES


def quality_rows(student_steps: int, teacher_steps: int) -> list[tuple[str, str, str, int]]:
    """(row name, model, sampler, steps) of the table, in its order."""
    return [
        (f"student ddim {student_steps}", "student", "ddim", student_steps),
        (f"teacher ddim {student_steps}", "teacher", "ddim", student_steps),
        (f"teacher dpmpp_2m {student_steps}", "teacher", "dpmpp_2m", student_steps),
        (f"teacher ddim {teacher_steps}", "teacher", "ddim", teacher_steps),
    ]


class RoundScorer:
    """Reference statistics and the extractor, loaded once per run, and the scores of one round's table.

    Args:
        run (`TrainConfig`): reads `eval_features`, `eval_metrics`, `eval_num_samples`, `eval_batch_size`, `seed`.
        data (`DataConfig`): the training data (the reference statistics' cache key).
        source (`DataSource`): the run's data source; its `reference_images` are the reference pixels.
        resolution (`int`): the model's image size (a latent model's decoded images', not its latents').
        device (`torch.device`): where to sample and extract features.
    """

    def __init__(self, run, data, source, resolution: int, device):
        self.run, self.metrics = run, parse_metrics(run.eval_metrics, "--eval_metrics")
        self.extractor = get_extractor(run.eval_features, device, run.eval_batch_size)
        images = source.reference_images(None)
        self.reference = reference_statistics(
            self.extractor, resolution=resolution, channels=images[0:1].shape[1], dataset_name=data.dataset_name,
            train_data_dir=data.train_data_dir, dataset_config_name=data.dataset_config_name,
            image_column=data.image_column, max_images=data.max_train_samples, center_crop=data.center_crop,
            data_cache_dir=data.cache_dir, images=images,
        )  # fmt: skip

    @torch.no_grad()
    def score(self, unet, scheduler_config, sampler: str, steps: int, label_names=None, **decoder) -> dict[str, float]:
        """FID/KID/... of `unet` sampled with `sampler` at `steps` (trailing spacing, seeds seed .. seed + N - 1).

        A latent model's `decoder` (`vae`, `latent_scaling_factor`) decodes its samples, so that pixels are scored.
        """
        scheduler = scheduler_from_name(sampler, scheduler_config, **DDIM_OVERRIDES)
        pipeline = PipelineParts(unet, scheduler, label_names, **decoder).pipeline()
        was_training = unet.training
        unet.eval()
        try:
            images = generate_images(
                pipeline, self.run.eval_num_samples, batch_size=self.run.eval_batch_size, seed=self.run.seed,
                num_inference_steps=steps,
            )  # fmt: skip
        finally:
            unet.train(was_training)
        with torch.autocast(self.extractor.device.type, enabled=False):  # features in full precision
            return score(self.extractor.extract(images), self.reference, self.metrics, seed=self.run.seed)

    def table(
        self,
        student,
        student_config,
        teacher,
        teacher_config,
        student_steps: int,
        teacher_steps: int,
        label_names=None,
        **decoder,
    ):
        """{row name: scores} for `quality_rows`, each model sampled with its own scheduler config (and `decoder`)."""
        models = {"student": (student, student_config), "teacher": (teacher, teacher_config)}
        return {
            name: self.score(*models[model], sampler, steps, label_names, **decoder)
            for name, model, sampler, steps in quality_rows(student_steps, teacher_steps)
        }

    def describe(self) -> str:
        return (
            f"{self.run.eval_features}, {self.run.eval_num_samples} samples (seeds {self.run.seed}+), reference: "
            f"{self.reference.source} ({self.reference.num_images} images)"
        )


def format_quality_table(rounds: list[dict[str, Any]]) -> str:
    """A Markdown table: one row per round and sampler, one column per metric."""
    metrics = sorted({metric for entry in rounds for scores in entry["scores"].values() for metric in scores})
    lines = ["| round | sampler | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for entry in rounds:
        # In the order of `quality_rows` (the scores come back from JSON with their names sorted).
        order = [name for name, *_ in quality_rows(entry["student_steps"], 0)][:3]
        for name in sorted(entry["scores"], key=lambda name: order.index(name) if name in order else len(order)):
            scores = entry["scores"][name]
            cells = " | ".join(f"{scores[m]:.4g}" if m in scores else "" for m in metrics)
            lines.append(f"| {entry['teacher_steps']} -> {entry['student_steps']} | {name} | {cells} |")
    return "\n".join(lines)
