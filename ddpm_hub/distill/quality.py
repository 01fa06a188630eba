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
    """Reference statistics and the extractor, loaded once per distillation, and the scores of one round's table.

    The teacher's rows depend only on the teacher, the sampler and the step count, so each is computed once per
    distillation and reused by every round (the large `--eval_teacher_steps` row is the costliest of a table).

    Args:
        run (`TrainConfig`): reads `eval_features`, `eval_metrics`, `eval_num_samples`, `eval_batch_size`, `seed`.
        source (`DataSource`): the training data; its `identity()` keys the reference statistics, its
            `reference_images` are their pixels.
        resolution (`int`): the model's image size (a latent model's decoded images', not its latents').
        device (`torch.device`): where to sample and extract features.
    """

    def __init__(self, run, source, resolution: int, device):
        self.run, self.metrics = run, parse_metrics(run.eval_metrics, "--eval_metrics")
        self.extractor = get_extractor(run.eval_features, device, run.eval_batch_size)
        self.identity = source.identity()
        channels = source.reference_images(1)[0:1].shape[1] if getattr(source, "channels", None) is None else None
        self.reference = reference_statistics(
            self.extractor, self.identity, resolution=resolution, channels=channels or source.channels,
            images=lambda: source.reference_images(None),
        )  # fmt: skip
        self.teacher_rows: dict[tuple[str, int], dict[str, float]] = {}

    @torch.no_grad()
    def score(self, parts: PipelineParts, sampler: str, steps: int, what: str = "") -> dict[str, float]:
        """FID/KID/... of the pipeline of `parts` sampled with `sampler` at `steps` (trailing spacing, seeds seed ..
        seed + N - 1); a latent model's `vae` in `parts` decodes its samples, so that pixels are scored."""
        pipeline = parts.pipeline(sampler, **DDIM_OVERRIDES)
        was_training = parts.unet.training
        parts.unet.eval()
        try:
            images = generate_images(
                pipeline, self.run.eval_num_samples, batch_size=self.run.eval_batch_size, seed=self.run.seed,
                num_inference_steps=steps, progress=f"Scoring {what}",
            )  # fmt: skip
        finally:
            parts.unet.train(was_training)
        with torch.autocast(self.extractor.device.type, enabled=False):  # features in full precision
            return score(self.extractor.extract(images), self.reference, self.metrics, seed=self.run.seed)

    def table(self, student: PipelineParts, teacher: PipelineParts, student_steps: int, teacher_steps: int):
        """{row name: scores} for `quality_rows`, each model sampled with its own parts (scheduler, VAE, classes)."""
        table = {}
        for name, model, sampler, steps in quality_rows(student_steps, teacher_steps):
            if model == "student":
                table[name] = self.score(student, sampler, steps, name)
                continue
            if (sampler, steps) not in self.teacher_rows:
                self.teacher_rows[sampler, steps] = self.score(teacher, sampler, steps, name)
            table[name] = self.teacher_rows[sampler, steps]
        return table

    def describe(self) -> str:
        return (
            f"{self.run.eval_features}, {self.run.eval_num_samples} samples (seeds {self.run.seed}+), reference: "
            f"{self.reference.source} ({self.reference.num_images} images)"
        )

    def reference_record(self) -> dict[str, Any]:
        """What the rows were scored against (in each round's quality.json)."""
        return {"source": self.identity.description, "fingerprint": self.identity.fingerprint,
                "num_images": self.reference.num_images}  # fmt: skip


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
