"""`ddpm-hub ema RUN`: the EMA of any length, after training, from the run's post-hoc EMA snapshots.

    ddpm-hub ema runs/emoji --sigma_rel 0.07 --output_dir emoji-ema-0.07
    ddpm-hub ema runs/emoji --sigma_rel 0.12 --step 20000 --output_dir emoji-step-20000
    ddpm-hub ema runs/emoji --sweep 0.02:0.25:12 --output_dir emoji-best --num_samples 2048 --sampler ddim

`--sigma_rel` writes one reconstruction as a normal pipeline; `--sweep START:STOP:COUNT` scores COUNT of them with
the flags of `ddpm-hub eval` against `--reference` (default: the run's training data), prints the curve, saves it as
`posthoc_ema_sweep.json` and `posthoc_ema_sweep.png`, and writes the best one. Everything cheap (the snapshots, the
step, each sigma_rel's reach, the run's pipeline, the output folder) is checked before anything is sampled.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arguments import one_line, parse_config
from ..config import EvalConfig
from .profiles import SIGMA_REL_MAX, check_sigma_rel

PROG = "ddpm-hub ema"
logger = logging.getLogger("ddpm_hub")


@dataclass
class EmaConfig:
    """`ddpm-hub ema RUN --sigma_rel S | --sweep A:B:N --output_dir OUT`: reconstruct a post-hoc EMA."""

    run: str = field(metadata={"positional": True, "help": "The training run's folder (with ema-snapshots/)."})
    output_dir: str = field(metadata={"help": "Where to write the reconstructed pipeline (and a sweep's curve)."})
    sigma_rel: float | None = field(
        default=None,
        metadata={"help": f"The EMA length relative to training time, in (0, {SIGMA_REL_MAX:.4f}] (EDM2: 0.05-0.2)."},
    )
    sweep: str | None = field(
        default=None,
        metadata={
            "metavar": "START:STOP:COUNT",
            "help": "Score COUNT sigma_rels from START to STOP (e.g. 0.02:0.25:12) and keep the best (lowest FID).",
        },
    )
    step: int | None = field(default=None, metadata={"help": "A step with snapshots (default: the latest)."})
    reference: str | None = field(
        default=None,
        metadata={"help": "--sweep: the data to score against, as for `ddpm-hub eval` (default: the run's own)."},
    )
    reference_config: str | None = field(default=None, metadata={"help": "The reference data set's config."})
    image_column: str | None = field(default=None, metadata={"help": "The reference data set's image column."})
    max_reference_images: int | None = field(default=None, metadata={"help": "Use a seeded subset of the reference."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where reference statistics are cached (default ~/.cache/ddpm_hub)."}
    )
    score_run_pipeline: bool = field(
        default=True,
        metadata={
            "help": "--sweep: also score the run's own pipeline (its fixed-decay EMA) when --step is its last step."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, mps..."})

    def validate(self) -> None:
        if (self.sigma_rel is None) == (self.sweep is None):
            raise ValueError("give either --sigma_rel S or --sweep START:STOP:COUNT.")
        if self.sigma_rel is not None:
            check_sigma_rel(self.sigma_rel, "--sigma_rel")
        self.sigma_rels()
        if self.step is not None and self.step < 1:
            raise ValueError(f"--step must be positive, got {self.step}.")
        if self.max_reference_images is not None and self.max_reference_images < 2:
            raise ValueError(f"--max_reference_images must be at least 2, got {self.max_reference_images}.")

    def sigma_rels(self) -> list[float]:
        """The sigma_rels to reconstruct: `--sigma_rel`, or the sweep's evenly spaced values (ends included)."""
        if self.sweep is None:
            return [self.sigma_rel]
        parts = self.sweep.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"--sweep {self.sweep!r} is not START:STOP:COUNT, e.g. 0.02:0.25:12.") from None
        if not 0 < start < stop <= SIGMA_REL_MAX or count < 2:
            raise ValueError(f"--sweep {self.sweep!r} needs 0 < START < STOP <= {SIGMA_REL_MAX:.4f} and COUNT >= 2.")
        return [round(start + (stop - start) * i / (count - 1), 6) for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    ema, scoring = parse_config(
        (EmaConfig, EvalConfig), argv, prog=PROG, description="Reconstruct a post-hoc EMA of a training run."
    )
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    from ..files import NonFiniteWeightsError, WriteError

    try:
        job = Job.prepare(ema, scoring)
        if ema.sweep is None:
            job.write_one()
        else:
            job.sweep()
    except ValueError as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except (WriteError, NonFiniteWeightsError, ImportError) as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


class Job:
    """One `ddpm-hub ema` command: its checked inputs, then `write_one()` or `sweep()`."""

    def __init__(self, ema: EmaConfig, scoring: EvalConfig, reconstructor, plans, pipeline, device, run_settings):
        self.ema, self.scoring = ema, scoring
        self.reconstructor, self.plans, self.pipeline, self.device = reconstructor, plans, pipeline, device
        self.run_settings = run_settings
        self.scheduler = pipeline.scheduler  # the run's own, exported with the reconstruction
        self.output_dir = Path(ema.output_dir)

    @classmethod
    def prepare(cls, ema: EmaConfig, scoring: EvalConfig) -> Job:
        """Every check that needs no sampling, cheapest first; one-line `ValueError`s."""
        from ..devices import resolve_device
        from ..model_card import CONFIG_FILE
        from .reconstruct import Reconstructor
        from .sweep import check_scoring
        from .template import check_output_dir, load_template, read_json

        run_dir = Path(ema.run)
        if not run_dir.is_dir():
            raise ValueError(f"RUN {ema.run!r} is not a folder.")
        check_output_dir(run_dir, Path(ema.output_dir))
        if ema.sweep is not None:
            check_scoring(scoring)
        reconstructor = Reconstructor(run_dir, ema.step)
        plans = [reconstructor.plan(sigma_rel) for sigma_rel in ema.sigma_rels()]
        device = resolve_device(ema.device)
        pipeline = load_template(run_dir, reconstructor.unet_config, device)
        if ema.sweep is not None and pipeline.low_resolution is not None:
            # The sweep scores images generated from noise, which an upscaler does not make.
            raise ValueError(
                f"RUN {ema.run!r} is a super-resolution model: --sweep scores images generated from noise; write one "
                "reconstruction with --sigma_rel and score it with `ddpm-hub eval OUT --metrics psnr,ssim,consistency`."
            )
        return cls(ema, scoring, reconstructor, plans, pipeline, device, read_json(run_dir / CONFIG_FILE))

    def load(self, plan) -> None:
        from .template import load_weights

        load_weights(self.pipeline.unet, self.reconstructor.weights(plan))

    def export(self, plan, metrics: dict[str, Any] | None = None) -> None:
        from .template import export_reconstruction

        self.load(plan)
        export_reconstruction(self.pipeline, self.scheduler, self.output_dir, plan, self.run_settings, metrics)

    def write_one(self) -> None:
        plan = self.plans[0]
        self.export(plan)
        print(
            f"Saved {self.output_dir}: the EMA of sigma_rel {plan.sigma_rel:g} (gamma {plan.gamma:.2f}) at step "
            f"{plan.step}, from {self.reconstructor.describe()} (profile fit within {plan.profile_error:.1%})."
        )

    def sweep(self) -> None:
        """Score every sigma_rel (and the run's own pipeline), keep the lowest FID, save the curve and the best."""
        from ..files import write_json
        from ..sampling import default_steps
        from .sweep import SWEEP_JSON, SWEEP_PLOT, SweepScorer, format_curve, plot_curve, reference_data

        channels, resolution, _ = self.pipeline.image_shape
        overrides = dict(
            dataset_config_name=self.ema.reference_config, image_column=self.ema.image_column,
            max_images=self.ema.max_reference_images,
        )  # fmt: skip
        reference = reference_data(self.ema.reference, overrides, self.run_settings)
        scorer = SweepScorer(self.scoring, reference, resolution, channels, self.device, self.ema.cache_dir)
        steps = self.scoring.num_inference_steps or default_steps(self.pipeline)
        self.pipeline.set_sampler(self.scoring.sampler)
        print(f"Scoring {len(self.plans)} reconstructions at step {self.reconstructor.step}: {scorer.describe(steps)}")
        baseline = self.score_run_pipeline(scorer, steps)
        curve = []
        for plan in self.plans:
            self.load(plan)
            scores = scorer.score(self.pipeline, steps)
            curve.append(dict(sigma_rel=plan.sigma_rel, gamma=round(plan.gamma, 4), **scores,
                              profile_error=round(plan.profile_error, 5)))  # fmt: skip
            print(f"  sigma_rel {plan.sigma_rel:.4f}: FID {scores['fid']:.4f}")
        best = min(curve, key=lambda point: point["fid"])
        plan = next(p for p in self.plans if p.sigma_rel == best["sigma_rel"])
        metrics = {"posthoc_ema_fid": round(best["fid"], 6), "posthoc_ema_eval_settings": scorer.describe(steps)}
        self.export(plan, metrics)
        record = dict(
            run=str(self.reconstructor.run_dir), step=self.reconstructor.step, stored=self.reconstructor.describe(),
            **scorer.settings(steps), curve=curve, best=best, run_pipeline=baseline,
        )  # fmt: skip
        write_json(self.output_dir / SWEEP_JSON, record)
        title = f"Post-hoc EMA at step {self.reconstructor.step}: {scorer.describe(steps)}"
        plot_curve(self.output_dir / SWEEP_PLOT, curve, best["sigma_rel"], title, baseline)
        print(format_curve(curve, best["sigma_rel"], baseline))
        print(f"Saved {self.output_dir} (sigma_rel {best['sigma_rel']:g}), {SWEEP_JSON} and {SWEEP_PLOT}.")

    def score_run_pipeline(self, scorer, steps: int) -> dict[str, Any] | None:
        """The run's exported pipeline, scored alike, when it is of the sweep's step (else `None`)."""
        from ..model_card import METRICS_FILE
        from .template import read_json

        final_step = read_json(self.reconstructor.run_dir / METRICS_FILE).get("optimizer_steps")
        if not self.ema.score_run_pipeline or final_step != self.reconstructor.step:
            if self.ema.score_run_pipeline:
                print(f"Not scoring the run's own pipeline: it is of step {final_step}, not {self.reconstructor.step}.")
            return None
        settings = self.run_settings
        label = (
            f"fixed-decay EMA (max decay {settings.get('ema_max_decay')})"
            if settings.get("use_ema")
            else "the run's weights (no EMA)"
        )
        fid = scorer.score(self.pipeline, steps)["fid"]
        print(f"  {label}: FID {fid:.4f}")
        return dict(label=label, fid=fid)
