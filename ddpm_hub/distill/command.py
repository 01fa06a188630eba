"""`ddpm-hub distill TEACHER --output_dir OUT`: parse, check everything cheap, then run the rounds."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from ..arguments import one_line, parse_config
from ..export import PIPELINE_ENTRIES
from ..model_card import CONFIG_FILE, METRICS_FILE, SAMPLE_GRID
from ..run_folder import OutputFolder
from .config import (
    CONFIG_TYPES,
    DistillConfig,
    check_latent_teacher,
    check_teacher_folder,
    is_latent_pipeline,
    teacher_fingerprint,
)
from .rounds import TRAJECTORY_STEPS, check_ddim_can_run

logger = logging.getLogger("ddpm_hub")

PROG = "ddpm-hub distill"


def check_run_flags(distill: DistillConfig, data, run, hub) -> None:
    """Training flags that have another meaning here, or none."""
    if run.max_train_steps is not None:
        raise ValueError("--max_train_steps is for training; a distillation round is --steps_per_round steps long.")
    if run.eval_steps or run.eval_epochs:
        raise ValueError(
            "--eval_steps and --eval_epochs are for training; each round is scored at its end (--eval_rounds)."
        )
    if run.post_hoc_ema:
        raise ValueError("--post_hoc_ema is for training; a distillation round keeps the fixed-decay EMA (--use_ema).")
    if hub.hub_push_checkpoints:
        raise ValueError(
            "--hub_push_checkpoints is for training; a distillation pushes only its final student, its rounds' "
            "checkpoints stay local (in OUT/round-N/)."
        )
    if distill.eval_rounds:
        from ..evaluation import check_sample_count, parse_metrics

        check_sample_count(
            run.eval_num_samples, run.eval_features, parse_metrics(run.eval_metrics), "--eval_num_samples"
        )


def resolve_teacher(distill: DistillConfig, cache_dir: str | None) -> Path:
    """The teacher's local folder: the path given, or a download of the Hub repo; checked to be a pipeline DDIM runs."""
    path = Path(distill.teacher)
    if not path.exists():
        looks_like_repo = distill.teacher.count("/") == 1 and not distill.teacher.startswith((".", "/"))
        if not looks_like_repo:
            raise ValueError(
                f"TEACHER {distill.teacher!r} is neither a pipeline folder nor a Hub repo id ('org/name')."
            )
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(distill.teacher, revision=distill.teacher_revision, cache_dir=cache_dir))
        except Exception as error:
            raise ValueError(f"TEACHER {distill.teacher!r} could not be downloaded: {one_line(error)}") from error
    elif not path.is_dir():
        raise ValueError(f"TEACHER {distill.teacher!r} is a file, not a pipeline folder.")
    components = check_teacher_folder(path, "TEACHER")
    try:
        scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
        unet_config = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"TEACHER {distill.teacher!r} is not a ddpm-hub pipeline: {one_line(error)}") from error
    try:
        check_ddim_can_run(scheduler_config, unet_config, distill.start_steps)
    except ValueError as error:
        raise ValueError(f"TEACHER {distill.teacher!r}: {error}") from error
    if is_latent_pipeline(components):  # a latent teacher: distilled on its own VAE's latents (ddpm_hub.distill.latent)
        check_latent_teacher(path, components, unet_config, "TEACHER")
    if scheduler_config.get("prediction_type", "epsilon") == "epsilon":
        logger.warning(
            "TEACHER predicts epsilon: its high-noise DDIM steps carry its own epsilon error, which two-step targets "
            "cannot teach, so rounds of %d student steps or fewer match its whole DDIM trajectory from pure noise "
            "(slower per step) and longer rounds follow it less well than a v_prediction teacher's (see 'Epsilon "
            "teachers' in docs/distillation.md); compare the rounds' scores with the teacher's.",
            TRAJECTORY_STEPS,
        )
    return path


def check_labels(teacher_dir: Path, data) -> None:
    """A class-conditional teacher needs labelled data (its classes), an unconditional one unlabelled data."""
    classes = json.loads((teacher_dir / "unet" / "config.json").read_text(encoding="utf-8")).get("num_class_embeds")
    labelled = data.class_conditional or data.class_column is not None
    if classes and not labelled:
        raise ValueError(
            f"the teacher is class-conditional ({classes - 1} classes): distil it on its labelled data with "
            "--class_conditional (or --class_column NAME)."
        )
    if labelled and not classes:
        raise ValueError("the teacher is unconditional: drop --class_conditional / --class_column.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--teacher", *argv]  # TEACHER is positional
    distill, data, run, hub = parse_config(
        CONFIG_TYPES, argv, prog=PROG, description="Distil a DDPM into a few-step student (progressive distillation)."
    )
    from ..files import NonFiniteWeightsError, WriteError
    from ..train_step import DivergedError
    from ..training import PushError, SetupError, reported_as_setup_errors

    try:
        with reported_as_setup_errors():
            check_run_flags(distill, data, run, hub)
            check_output_dir(distill, run)
            teacher_dir = resolve_teacher(distill, data.cache_dir)
            check_labels(teacher_dir, data)
            from .distiller import check_finished_rounds, check_same_teacher, distill_run

            fingerprint = teacher_fingerprint(teacher_dir)
            if run.resume_from_checkpoint is not None or not run.overwrite_output_dir:
                check_same_teacher(teacher_dir, distill, Path(run.output_dir), fingerprint)
                check_finished_rounds(teacher_dir, distill, Path(run.output_dir))

        distill_run(distill, teacher_dir, data, run, hub, fingerprint=fingerprint)
    except (SetupError, PushError, DivergedError, NonFiniteWeightsError, WriteError) as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, SetupError) else 1
    return 0


def check_output_dir(distill: DistillConfig, run) -> None:
    """Refuse an output folder the distillation would damage (the rule of training, with a distillation's names):
    the TEACHER itself, a file, a folder that cannot be written, a non-empty folder that is not a distillation (unless
    --overwrite_output_dir), or a previous distillation unless told to resume it or start over."""
    from ..checkpointing import list_checkpoints

    output_dir = Path(run.output_dir)
    if run.resume_from_checkpoint not in (None, "latest"):
        raise ValueError("--resume_from_checkpoint takes 'latest' for a distillation (each round resumes its own).")
    if output_dir.exists() and output_dir.resolve() == Path(distill.teacher).resolve():
        raise ValueError(
            f"--output_dir {run.output_dir!r} is the TEACHER folder: the student would replace the teacher; choose "
            "another --output_dir."
        )
    DISTILLATION.check(output_dir, overwrite=run.overwrite_output_dir)
    rounds = round_folders(output_dir) if output_dir.is_dir() else []
    previous = (output_dir / "model_index.json").exists() or any(
        list_checkpoints(folder) or (folder / "model_index.json").exists() for folder in rounds
    )
    if previous and run.resume_from_checkpoint is None and not run.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {run.output_dir!r} already holds a distillation; pass --resume_from_checkpoint latest to "
            "continue it, --overwrite_output_dir to start over, or choose another --output_dir."
        )


_ROUND = re.compile(r"^round-\d+$")
# What a distillation writes at OUT: the final student, its settings, scores, grid and card, and one folder a round.
FINAL_FILES = frozenset((*PIPELINE_ENTRIES, "README.md", CONFIG_FILE, METRICS_FILE, SAMPLE_GRID))


def round_folders(output_dir: Path) -> list[Path]:
    return sorted(path for path in output_dir.iterdir() if path.is_dir() and _ROUND.match(path.name))


def is_distillation(output_dir: Path) -> bool:
    """Whether a folder holds a distillation: a round's folder, or a final student whose settings name a teacher."""
    if round_folders(output_dir):
        return True
    try:
        return "distill_teacher" in json.loads((output_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def distillation_writes(name: str) -> bool:
    return name in FINAL_FILES or bool(_ROUND.match(name)) or name.startswith((".pipeline.", ".hub-push-"))


DISTILLATION = OutputFolder(
    flag="--output_dir",
    holds="a distillation",
    is_own=is_distillation,
    writes=distillation_writes,
    anyway="pass --overwrite_output_dir to distil there",
)
