"""`ddpm-hub eval-text2img MODEL --prompts prompts.txt`: how well a text-to-image model (or several, or several
schedulers of one) follows a file of prompts, by CLIP score, and how close its images are to a folder of images, by
FID and KID.

    ddpm-hub eval-text2img stabilityai/stable-diffusion-2-base --prompts drawbench.txt --scheduler ddim \\
        --compare dpmpp_2m --num_inference_steps 25 --output clip.json
    ddpm-hub eval-text2img MODEL --prompts prompts.txt --num_images_per_prompt 8 --reference photos/ \\
        --features efficientnet-lite0-40 --metrics fid,kid

Every run draws image k (counted over all prompts) from seed + k, so runs differ only by what is compared. The CLIP
score is `clip_score.py`'s, its mean and standard deviation over the images. FID and KID use `ddpm_hub.evaluation`
(its offline EfficientNet-Lite0 extractor, reference statistics cached by folder, resolution and extractor), on
centre crops of the images, as `ddpm-hub eval` scores a folder: FID needs more images than the extractor has
dimensions (1280 for efficientnet-lite0, 40 to 320 for its `-<C>` variants), KID only 2. With a few prompts,
raise --num_images_per_prompt or choose a smaller extractor; numbers are only comparable under the same extractor,
image count and prompts.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..arguments import one_line, parse_config
from ..devices import resolve_device
from ..evaluation import EFFICIENTNET, EXTRACTORS, check_sample_count, parse_metrics
from ..pipeline_steps import SAMPLERS
from .cli import GenerationConfig, ModelConfig, SchedulerName
from .clip_score import DEFAULT_CLIP_MODEL, CLIPScorer
from .inputs import GenerationInputs, check_model_reference, read_prompts_file, resolve_dtype
from .metadata import slug
from .text2image import Text2Image, check_pipeline


def _same_as(config: type, name: str, **metadata: Any):
    """A field like `config`'s field `name` (default and help), its metadata updated with `metadata`."""
    source = next(f for f in dataclasses.fields(config) if f.name == name)
    return field(default=source.default, metadata={**source.metadata, **metadata})


@dataclass
class Text2ImageEvalConfig:
    """`ddpm-hub eval-text2img MODEL --prompts FILE`: what to generate, what to compare, what to score against."""

    model: str = field(metadata={"positional": True, "help": "Hub id or local folder of a text-to-image model."})
    prompts: str = field(metadata={"help": "Text file with one prompt a line (blank lines are skipped)."})
    compare: list[str] = field(
        default_factory=list,
        metadata={
            "action": "extend",
            "help": "Also run these, on the same prompts and seeds, into one table: a scheduler name (MODEL with that "
            f"sampler: {', '.join(SAMPLERS)}) or another model (with --scheduler).",
        },
    )
    scheduler: SchedulerName | None = _same_as(ModelConfig, "scheduler")  # type: ignore[valid-type]
    num_inference_steps: int = _same_as(GenerationConfig, "num_inference_steps")
    guidance_scale: float = _same_as(GenerationConfig, "guidance_scale")
    height: int | None = _same_as(GenerationConfig, "height")
    width: int | None = _same_as(GenerationConfig, "width")
    negative_prompt: str | None = _same_as(GenerationConfig, "negative_prompt")
    num_images_per_prompt: int = _same_as(GenerationConfig, "num_images_per_prompt")
    seed: int = field(default=0, metadata={"help": "Image k (counted over all prompts) gets seed + k, in every run."})
    clip_model: str = field(default=DEFAULT_CLIP_MODEL, metadata={"help": "CLIP model for the CLIP score."})
    reference: str | None = field(
        default=None, metadata={"help": "A folder of images: also score FID and KID against it (--metrics)."}
    )
    metrics: str = field(
        default="fid,kid", metadata={"help": "With --reference: comma-separated fid, kid, pr (precision/recall)."}
    )
    features: str = field(
        default=EFFICIENTNET,
        metadata={
            "help": f"Feature extractor for --reference: {', '.join(EXTRACTORS)}. FID needs more images than its "
            "dimensions: efficientnet-lite0-40 takes 41 and more."
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where reference statistics are cached (default ~/.cache/ddpm_hub)."}
    )
    output: str | None = field(default=None, metadata={"help": "Also write the results here (JSON)."})
    save_images: str | None = field(
        default=None, metadata={"help": "Also save every image with its metadata here, one folder per run."}
    )
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = _same_as(ModelConfig, "dtype")
    device: str = _same_as(ModelConfig, "device")

    @functools.cached_property
    def prompt_list(self) -> list[str]:
        return read_prompts_file(self.prompts, "--prompts")

    @functools.cached_property
    def metric_names(self) -> tuple[str, ...]:
        return parse_metrics(self.metrics)

    def validate(self) -> None:
        resolve_dtype(self.dtype, resolve_device(self.device))
        self.runs()
        self.generation_inputs().check()
        if self.reference is not None:
            self._check_reference()
        elif self.metrics != "fid,kid" or self.features != EFFICIENTNET:
            raise ValueError("--metrics and --features score against --reference; give a folder of images.")
        if self.output is not None and (Path(self.output).is_dir() or self.output.endswith(("/", "\\"))):
            raise ValueError(f"--output {self.output!r} is a folder; give a file name, e.g. results.json.")

    def _check_reference(self) -> None:
        from ..evaluation.evaluate import has_images

        folder = Path(self.reference)
        if not folder.is_dir() or not has_images(folder):
            raise ValueError(f"--reference {self.reference!r} is not a folder of images.")
        if "is" in self.metric_names:
            raise ValueError("--metrics is (Inception Score) needs no reference; choose from fid, kid, pr.")
        if self.features not in EXTRACTORS:
            raise ValueError(f"--features {self.features!r} is not one of: {', '.join(EXTRACTORS)}.")
        flag = "the image count (prompts x --num_images_per_prompt)"
        try:
            check_sample_count(len(self.prompt_list) * self.num_images_per_prompt, self.features, self.metric_names,
                               flag=flag)  # fmt: skip
        except ValueError as error:
            raise ValueError(f"{error} KID alone (--metrics kid) needs only 2 images.") from None

    def runs(self) -> list[tuple[str, str | None]]:
        """(model, scheduler) of MODEL and of each --compare, in order; `ValueError` for a bad or repeated one."""
        check_model_reference(self.model)
        runs = [(self.model, self.scheduler)]
        for other in self.compare:
            if other in SAMPLERS and Path(other).exists():
                raise ValueError(f"--compare {other!r} is both a scheduler and a local folder; write ./{other} for "
                                 "the folder.")  # fmt: skip
            if other not in SAMPLERS:
                check_model_reference(other)
            runs.append((self.model, other) if other in SAMPLERS else (other, self.scheduler))
        repeated = [run for k, run in enumerate(runs) if run in runs[:k]]
        if repeated:
            model, scheduler = repeated[0]
            raise ValueError(f"--compare repeats the run {model!r} with scheduler {scheduler or 'the model default'}.")
        return runs

    def generation_inputs(self) -> GenerationInputs:
        return GenerationInputs(
            self.prompt_list, negative_prompt=self.negative_prompt, num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale, height=self.height, width=self.width,
            num_images_per_prompt=self.num_images_per_prompt, seed=self.seed,
        )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run `ddpm-hub eval-text2img`; returns the exit status (2 for bad input)."""
    prog = "ddpm-hub eval-text2img"
    (config,) = parse_config(
        (Text2ImageEvalConfig,), argv, prog=prog,
        description="Score a text-to-image model on a file of prompts (CLIP score; FID and KID against --reference), "
        "or compare models and schedulers on the same prompts and seeds.",
    )  # fmt: skip
    try:
        for model in dict.fromkeys(model for model, _ in config.runs()):
            check_pipeline(model)  # every model's index, before the first one generates
        scorer = CLIPScorer.from_pretrained(config.clip_model, device=config.device)
        extractor = None
        if config.reference is not None:
            from ..evaluation.features import get_extractor

            extractor = get_extractor(config.features, scorer.device)
        result = evaluate(config, scorer, extractor)
    except (ValueError, OSError) as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    print(format_comparison(result))
    if config.output is not None:
        from ..files import write_json

        write_json(config.output, result)
        print(f"Saved {config.output}")
    return 0


def evaluate(config: Text2ImageEvalConfig, scorer: CLIPScorer, extractor=None) -> dict[str, Any]:
    """Generate the prompts' images with each run of `config` and score them; the result record (see `--output`).
    Raises `ValueError` or `OSError` when a model cannot be loaded or refuses the inputs (before it generates)."""
    loaded, results, reference_stats = None, [], {}
    for index, (model, scheduler) in enumerate(config.runs()):
        # Schedulers of one model share its loaded weights; the model's own scheduler is never swapped back in.
        same = loaded is not None and loaded.model in (model, str(Path(model).expanduser().resolve()))
        if same and (scheduler is not None or loaded.scheduler is None):
            loaded.set_scheduler(scheduler)
        else:
            loaded = None  # the previous model is freed before the next loads
            _free_memory()
            loaded = Text2Image.from_pretrained(model, scheduler=scheduler, dtype=config.dtype, device=config.device)
        loaded.check_inputs(**config.generation_inputs().kwargs())
        results.append(_score_run(config, loaded, scorer, extractor, reference_stats, index))
    return {
        "prompts_file": str(Path(config.prompts).resolve()), "num_prompts": len(config.prompt_list),
        "num_images_per_prompt": config.num_images_per_prompt, "seed": config.seed, "clip_model": scorer.name,
        "reference": None if config.reference is None else str(Path(config.reference).resolve()),
        "extractor": None if extractor is None else extractor.name, "runs": results,
    }  # fmt: skip


def _score_run(config, t2i: Text2Image, scorer: CLIPScorer, extractor, reference_stats: dict, index: int) -> dict:
    """Generate one run's images (timed) and score them: CLIP score, and with an extractor FID/KID."""
    start = time.perf_counter()
    output = t2i.generate(**config.generation_inputs().kwargs())
    seconds = time.perf_counter() - start
    scores = scorer.score(output)
    meta = output.metadata[0]
    record: dict[str, Any] = {
        "model": t2i.model, "scheduler": meta.scheduler, "scheduler_class": meta.scheduler_class,
        "num_inference_steps": meta.num_inference_steps, "guidance_scale": meta.guidance_scale,
        "height": meta.height, "width": meta.width, "dtype": meta.dtype, "device": meta.device,
        "num_images": len(output.images), "seconds_per_image": seconds / len(output.images),
        "clip_score_mean": statistics.fmean(scores), "clip_score_std": float(np.std(scores)),
    }  # fmt: skip
    if extractor is not None:
        record.update(_distances(config, output.images, extractor, reference_stats))
    record["images"] = [{"prompt": m.prompt, "seed": m.seed, "clip_score": m.clip_score} for m in output.metadata]
    if config.save_images is not None:
        label = slug(f"{Path(t2i.model).name}-{meta.scheduler or 'default'}")
        output.save(Path(config.save_images) / f"run-{index + 1}-{label}")
    return record


def _distances(config, images, extractor, reference_stats: dict) -> dict[str, float]:
    """FID/KID (and precision/recall) of centre crops of `images` against the reference folder at their size."""
    from ..evaluation.evaluate import score
    from ..evaluation.reference import reference_source, reference_statistics

    side = min(min(image.size) for image in images)
    crops = np.stack([np.asarray(_centre_crop(image, side)).transpose(2, 0, 1) for image in images])
    if side not in reference_stats:
        identity, reference_images = reference_source(config.reference)
        reference_stats[side] = reference_statistics(
            extractor, identity, resolution=side, cache_dir=config.cache_dir,
            images=lambda: reference_images(side, 3),
        )  # fmt: skip
    features = extractor.extract(crops)
    return score(features, reference_stats[side], config.metric_names, seed=config.seed)


def _centre_crop(image, side: int):
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.convert("RGB").crop((left, top, left + side, top + side))


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def format_comparison(result: dict[str, Any]) -> str:
    """The runs as one aligned table, with the settings they share below it."""
    columns = ["run", "model", "scheduler", "steps", "CLIP score", "s/image"]
    distances = [key for key in ("fid", "kid_mean", "precision", "recall") if key in result["runs"][0]]
    columns[5:5] = [
        {"fid": "FID", "kid_mean": "KID", "precision": "precision", "recall": "recall"}[k] for k in distances
    ]
    rows = []
    for k, run in enumerate(result["runs"]):
        values = [f"{run['fid']:.2f}" if key == "fid" else f"{run[key]:.4f}" for key in distances]
        if "kid_mean" in run:
            values[distances.index("kid_mean")] = f"{run['kid_mean']:.4f} ± {run['kid_std']:.4f}"
        scheduler = run["scheduler"] or f"{run['scheduler_class']} (model's)"
        rows.append([str(k + 1), run["model"], scheduler, str(run["num_inference_steps"]),
                     f"{run['clip_score_mean']:.2f} ± {run['clip_score_std']:.2f}", *values,
                     f"{run['seconds_per_image']:.3f}"])  # fmt: skip
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [columns, *rows]]
    first = result["runs"][0]
    shared = (
        f"{result['num_prompts']} prompts x {result['num_images_per_prompt']} images, seeds {result['seed']}+, "
        f"{first['width']}x{first['height']} px, guidance {first['guidance_scale']}, {first['dtype']} on "
        f"{first['device']}; CLIP score (mean ± std over images) with {result['clip_model']}"
    )
    if result["extractor"]:
        shared += f"; FID/KID with {result['extractor']} against {result['reference']}"
    return "\n".join([*lines, shared])


__all__ = ["Text2ImageEvalConfig", "evaluate", "format_comparison", "main"]
