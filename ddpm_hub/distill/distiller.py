"""Progressive distillation as a sequence of Trainer runs, one per round (Salimans & Ho 2022, Algorithm 2).

    ddpm-hub distill path/to/teacher --output_dir student --start_steps 256 --end_steps 4 --steps_per_round 2000
    accelerate launch -m ddpm_hub.cli distill org/teacher --output_dir student --mixed_precision bf16

Round k is a `DistillRound`: the `Trainer` with `DistillStep` as its step and the student's DDIM pipeline as its
export, trained in `OUT/round-N/` (N the student's steps); a latent teacher's rounds take the latent space as a part
(`ddpm_hub.latents.space.LatentSpace`): they train on the teacher's VAE's cached latents and export latent
students. The last round is scored (`--eval_rounds`; every round with `--eval_every_round`). Everything training
guarantees comes with it: exact resume from `OUT/round-N/checkpoint-*`, SIGTERM, the non-finite guard, logging,
previews. A round is finished once its `metrics.json` is written (after its pipeline); a resumed distillation skips
finished rounds, continues the first unfinished one from its last checkpoint, and loads every teacher from the
previous round's saved pipeline, so that an interrupted and an uninterrupted distillation compute the same bits. The
final student is exported to OUT itself, with a model card naming the teacher, the rounds, the step count and every
round's scores.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from diffusers import DDIMScheduler, UNet2DModel

from ..assembly import PipelineParts
from ..checkpointing import list_checkpoints
from ..config import DataConfig, HubConfig, ModelConfig, TrainConfig
from ..data.shards import resolve_train_shards
from ..export import ema_weights, export_pipeline
from ..files import save_image, write_json
from ..labels import drop_labels
from ..latents.space import LatentSpace
from ..model_card import CONFIG_FILE, METRICS_FILE, SAMPLE_GRID, card_info_for_run, write_model_card
from ..pipeline import DDPMHubPipeline, labels_in_id_order
from ..training import ModelShape, Trainer, record_metrics
from .config import DistillConfig, check_teacher_folder, is_latent_pipeline, teacher_fingerprint
from .quality import RoundScorer, format_quality_table
from .rounds import DDIM_OVERRIDES, TRAJECTORY_STEPS, ddim_scheduler, round_step_counts, step_grid
from .step import DistillStep

logger = logging.getLogger("ddpm_hub")

QUALITY_FILE = "quality.json"  # beside each round's pipeline: its table of scores, {row: {metric: value}}


def round_dir(output_dir: Path, student_steps: int) -> Path:
    return output_dir / f"round-{student_steps}"


def round_finished(folder: Path) -> bool:
    """A round is finished once its metrics.json is written, after its pipeline (model_index.json last)."""
    return (folder / METRICS_FILE).is_file() and (folder / "model_index.json").is_file()


@dataclasses.dataclass
class RoundPlan:
    index: int  # 0-based
    teacher_dir: Path  # the teacher of this round: TEACHER, or the previous round's pipeline
    teacher_steps: int
    student_steps: int
    folder: Path
    first_teacher_dir: Path  # TEACHER: every round is scored against it, the model distillation started from
    vae_source: Path | None = None  # a latent teacher: the TEACHER folder whose vae/ every round encodes with
    teacher_fingerprint: str | None = None  # TEACHER's (`teacher_fingerprint`), recorded by every round


class DistillRound(Trainer):
    """One round: the student (a copy of the teacher's weights) learns two teacher DDIM steps per step of its own.

    A latent teacher's round is the same round with the latent space as a part: it trains on the latents of the
    TEACHER folder's `vae/` (encoded once by the first round and cached, or read from latent shards) and exports a
    latent student with that VAE and the teacher's scaling factor. The VAE is never fetched on its own.
    """

    def __init__(
        self, plan: RoundPlan, distill: DistillConfig, data: DataConfig, run: TrainConfig, scorers: dict, shards=None
    ):
        self.plan_round, self.distill, self.scorers = plan, distill, scorers
        self.teacher_config = DDIMScheduler.load_config(plan.teacher_dir, subfolder="scheduler")
        parts = []
        if plan.vae_source is not None:
            # The VAE as the user named the teacher (a Hub teacher's folder is a path in the Hub cache).
            parts.append(LatentSpace(shards=shards, vae_label=f"{distill.teacher}/vae"))
        model_config = teacher_model_config(plan)
        super().__init__(model_config, data, run, HubConfig(), step_factory=self.make_step, shards=shards, parts=parts)

    def data_seed(self) -> int:
        # Every round decodes the same images (and a latent round reads the latents the first one encoded): the
        # distillation's seed, not the round's, which differs so that each round draws its own noise.
        return self.run_config.seed - self.plan_round.index

    def load_data(self):
        """The training data (pixels, or a latent round's cached latents), whose classes must be the teacher's."""
        data = super().load_data()
        check_label_names(self.plan_round.teacher_dir, data.label_names)
        return data

    def model_shape(self) -> ModelShape:
        # Previews sample the student with DDIM at its own steps, on the grid it is distilled on.
        shape = super().model_shape()
        return shape.replace(scheduler_overrides={**shape.scheduler_overrides, **DDIM_OVERRIDES})

    def end_training(self) -> None:
        # The trackers only: the next round runs in this process, on the same process group (`distill_run` ends it).
        for tracker in self.accelerator.trackers:
            tracker.finish()

    def make_step(self, model, noise_scheduler, accelerator, data, config) -> DistillStep:
        """The StepFactory: the frozen teacher of this round, and the student's grid."""
        self.teacher = UNet2DModel.from_pretrained(self.plan_round.teacher_dir, subfolder="unet")
        ddim = ddim_scheduler(self.teacher_config)
        dropping = None
        if data.num_classes and config.model.class_dropout_prob:
            dropping = functools.partial(
                drop_labels, probability=config.model.class_dropout_prob, null_class_id=data.num_classes
            )
        steps, trajectory = self.plan_round.student_steps, self.on_trajectories()
        if trajectory:
            logger.info(
                "Epsilon teacher, %d -> %d steps: the student learns the teacher's whole %d-step DDIM trajectory "
                "from pure noise (docs/distillation.md, 'Epsilon teachers').",
                self.plan_round.teacher_steps, steps, self.plan_round.teacher_steps,
            )  # fmt: skip
        return DistillStep(
            model,
            self.teacher,
            step_grid(self.teacher_config, steps),
            ddim.config.prediction_type,
            accelerator,
            data.to_model_input,
            random_flip=config.data.random_flip,
            clip=float(ddim.config.clip_sample_range) if ddim.config.clip_sample else None,
            drop_labels=dropping,
            trajectory=trajectory,
            compile_mode=config.compile_mode,
            compile_backend=config.run.compile_backend,
        )

    def student_scheduler(self) -> DDIMScheduler:
        # The teacher's DDIM settings, x_0 clipping included: without it an epsilon student's first step, whose
        # x_0 = (z - sigma eps) / alpha magnifies every error by 1 / alpha, strays far from its teacher (measured).
        return ddim_scheduler(self.teacher_config)

    def pipeline_parts(self) -> PipelineParts:
        """The student as a pipeline: DDIM (trailing spacing) whose default step count is the student's."""
        return (
            super()
            .pipeline_parts()
            .replace(scheduler=self.student_scheduler(), default_num_inference_steps=self.plan_round.student_steps)
        )

    def hyperparameters(self) -> dict[str, Any]:
        plan = self.plan_round
        return {
            **super().hyperparameters(),
            "distill_teacher": str(self.distill.teacher),
            "distill_teacher_fingerprint": plan.teacher_fingerprint or teacher_fingerprint(plan.first_teacher_dir),
            "distill_round": plan.index + 1,
            "distill_teacher_steps": plan.teacher_steps,
            "distill_student_steps": plan.student_steps,
            "distill_loss": (
                f"whole {plan.teacher_steps}-step DDIM trajectory from pure noise (epsilon teacher)"
                if self.on_trajectories()
                else "x target, max(SNR, 1) weight (eps teachers: eps target)"
            ),
        }

    def on_trajectories(self) -> bool:
        """Whether this round matches the teacher's whole trajectories (`DistillStep.trajectory_loss`): epsilon
        teachers, students of at most `TRAJECTORY_STEPS` steps."""
        prediction_type = self.teacher_config.get("prediction_type", "epsilon")
        return prediction_type == "epsilon" and self.plan_round.student_steps <= TRAJECTORY_STEPS

    def final_metrics(self) -> dict[str, Any]:
        """The training figures, and the round's quality table (main process, after the export)."""
        metrics = super().final_metrics()
        metrics.update(self.hyperparameters_of_round())
        if self.scored():
            scorer = self.scorer()
            logger.info("Scoring round %d: %s.", self.plan_round.index + 1, scorer.describe())
            # A latent round's samples are decoded by its VAE (on the accelerator meanwhile).
            with ema_weights(self.ema, self.base_unet), self.accelerator.autocast(), self.sampling():
                table = scorer.table(
                    self.pipeline_parts(), self.first_teacher(), self.plan_round.student_steps,
                    self.distill.eval_teacher_steps,
                )  # fmt: skip
            record = {"settings": scorer.describe(), "reference": scorer.reference_record(), "scores": table}
            write_json(self.output_dir / QUALITY_FILE, record)
            flat = {f"{metric}/{name}": value for name, scores in table.items() for metric, value in scores.items()}
            record_metrics(self.accelerator, self.output_dir, self.state.step, flat)
            metrics.update(
                {f"{name} {metric}": round(v, 6) for name, scores in table.items() for metric, v in scores.items()}
            )
        return metrics

    def scored(self) -> bool:
        """Whether this round is scored: the last one with `--eval_rounds` (the default), every one with
        `--eval_every_round` as well."""
        last = self.plan_round.student_steps == self.distill.end_steps
        return self.distill.eval_rounds and (last or self.distill.eval_every_round)

    def hyperparameters_of_round(self) -> dict[str, Any]:
        plan = self.plan_round
        return {"teacher_steps": plan.teacher_steps, "student_steps": plan.student_steps, "round": plan.index + 1}

    def first_teacher(self) -> PipelineParts:
        """TEACHER's parts (its UNet on the device): the rows "teacher ..." of every round's table are the model
        distillation started from (the training-free rival), not the previous round's student."""
        if "teacher" not in self.scorers:
            if self.plan_round.index == 0:
                unet = self.teacher
            else:
                folder = self.plan_round.first_teacher_dir
                unet = UNet2DModel.from_pretrained(folder, subfolder="unet").eval().requires_grad_(False)
            scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(self.plan_round.first_teacher_dir,
                                                                            subfolder="scheduler"))  # fmt: skip
            self.scorers["teacher"] = unet, scheduler
        unet, scheduler = self.scorers["teacher"]
        return super().pipeline_parts().replace(unet=unet.to(self.accelerator.device), scheduler=scheduler)

    def scorer(self) -> RoundScorer:
        # One reference-statistics computation per distillation (cached on disk too), shared by the rounds, as are
        # the teacher's rows.
        if "scorer" not in self.scorers:
            self.scorers["scorer"] = RoundScorer(
                self.run_config, self.data, self.image_resolution, self.accelerator.device
            )
        return self.scorers["scorer"]


def teacher_model_config(plan: RoundPlan) -> ModelConfig:
    """What a round trains: the teacher's UNet and schedule; for a latent teacher, on the latents of the TEACHER
    folder's `vae/`, scaled by the teacher's factor."""
    config = ModelConfig(pretrained_model_name_or_path=str(plan.teacher_dir))
    if plan.vae_source is None:
        return config
    index = json.loads((plan.vae_source / "model_index.json").read_text(encoding="utf-8"))
    return dataclasses.replace(
        config,
        vae_name_or_path=str(plan.vae_source),
        vae_subfolder="vae",
        latent_scaling_factor=index.get("latent_scaling_factor"),
    )


def plan_rounds(
    teacher_dir: Path, distill: DistillConfig, output_dir: Path, fingerprint: str | None = None
) -> list[RoundPlan]:
    plans, teacher, teacher_steps = [], teacher_dir, distill.start_steps
    index_file = json.loads((teacher_dir / "model_index.json").read_text(encoding="utf-8"))
    vae_source = teacher_dir if is_latent_pipeline(index_file) else None
    for index, student_steps in enumerate(round_step_counts(distill.start_steps, distill.end_steps)):
        folder = round_dir(output_dir, student_steps)
        plans.append(
            RoundPlan(index, teacher, teacher_steps, student_steps, folder, teacher_dir, vae_source, fingerprint)
        )
        teacher, teacher_steps = folder, student_steps
    return plans


def check_label_names(teacher_dir: Path, label_names: list[str] | None) -> None:
    """The data's class names (by id) are the teacher's: otherwise each label would teach another class."""
    index = json.loads((teacher_dir / "model_index.json").read_text(encoding="utf-8"))
    teacher_names = index.get("label_names")
    if not teacher_names or label_names is None:
        return
    teacher_names = labels_in_id_order(teacher_names)
    if [str(name) for name in label_names] != teacher_names:
        raise ValueError(
            f"the data's classes {label_names} are not the teacher's {teacher_names} (by id); distil the teacher on "
            "its own labelled data."
        )


def check_same_teacher(teacher_dir: Path, distill: DistillConfig, output_dir: Path, fingerprint: str) -> None:
    """Before any work on a resumed distillation: it goes on with the TEACHER it was started with, by fingerprint.

    Every round that began (and the final student) recorded its TEACHER's `distill_teacher_fingerprint` in its
    `training_config.json`; another teacher would train the rest of a round, or rewrite the card, against weights the
    earlier rounds never saw. Folders without a record (older versions) are not compared.
    """
    folders = [output_dir, *(plan.folder for plan in plan_rounds(teacher_dir, distill, output_dir))]
    for folder in folders:
        try:
            recorded = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent, or unreadable: check_finished_rounds says so for a finished round
            continue
        theirs = recorded.get("distill_teacher_fingerprint") if isinstance(recorded, dict) else None
        if theirs is not None and theirs != fingerprint:
            theirs_name = recorded.get("distill_teacher")
            raise ValueError(
                f"--output_dir {str(output_dir)!r} was distilled from another teacher ({theirs_name}, fingerprint "
                f"{theirs[:12]} in {folder.name}/{CONFIG_FILE}) than TEACHER {distill.teacher!r} "
                f"(fingerprint {fingerprint[:12]}); resume with that teacher, pass --overwrite_output_dir to start "
                "over with this one, or choose another --output_dir."
            )


def check_finished_rounds(teacher_dir: Path, distill: DistillConfig, output_dir: Path) -> None:
    """Before any work on a resumed distillation: each round that a started one builds on is there and readable.

    A round's checkpoints were distilled from the previous round's student, and a finished round's pipeline is the
    next round's teacher (and the last one's, the final student): a missing or unreadable one is refused in one
    sentence, rather than redone beneath a later round's checkpoints or met as a traceback mid-run.
    """
    plans = plan_rounds(teacher_dir, distill, output_dir)
    started = [plan for plan in plans if round_finished(plan.folder) or list_checkpoints(plan.folder)]
    if not started:
        return
    last = started[-1]
    for plan in plans[: last.index + 1]:
        name = f"round {plan.index + 1} ({plan.teacher_steps} -> {plan.student_steps} steps) in {plan.folder}"
        redo = [p.folder.name for p in plans[plan.index : last.index + 1] if p.folder.exists()]
        advice = (
            f"delete {', '.join(redo)} in {output_dir} to redo from round {plan.index + 1}, or pass "
            "--overwrite_output_dir to start over."
        )
        if plan is not last and not round_finished(plan.folder):
            raise ValueError(
                f"{name} is missing or unfinished, but round {last.index + 1} in {last.folder} was distilled from "
                f"it; restore it, {advice}"
            )
        if round_finished(plan.folder):
            try:
                read_round(plan.folder)
                check_round_pipeline(plan.folder)
            except Exception as error:  # any unreadable file: OSError, JSON, safetensors' own error
                raise ValueError(
                    f"{name} is finished but unreadable ({type(error).__name__}: {str(error).splitlines()[0]}); "
                    + advice
                ) from error


def check_round_pipeline(folder: Path) -> None:
    """Read a round's pipeline as the next round will (configs, and the weights' header), without loading it."""
    from safetensors import safe_open

    check_teacher_folder(folder, "the round folder")
    DDIMScheduler.load_config(folder, subfolder="scheduler")
    UNet2DModel.load_config(folder, subfolder="unet")
    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), framework="pt") as weights:
        if not list(weights.keys()):
            raise ValueError("its UNet weights file holds no tensors")


def round_run_config(run: TrainConfig, plan: RoundPlan, steps: int, overwrite: bool) -> TrainConfig:
    """Training's run config for one round: its folder, its length, and resume from its own last checkpoint."""
    resuming = not overwrite and bool(list_checkpoints(plan.folder))
    return dataclasses.replace(
        run,
        output_dir=str(plan.folder),
        max_train_steps=steps,
        seed=run.seed + plan.index,  # each round draws its own noise
        resume_from_checkpoint="latest" if resuming else None,
        overwrite_output_dir=overwrite,
        preview_sampler="ddim",
        ddpm_num_inference_steps=plan.student_steps,
        eval_steps=None,
        eval_epochs=None,
    )


def run_rounds(
    teacher_dir: Path, distill: DistillConfig, data: DataConfig, run: TrainConfig, fingerprint: str
) -> list[dict[str, Any]]:
    """Train every round not finished yet; returns each round's metrics (read back from finished rounds)."""
    output_dir, scorers, results = Path(run.output_dir), {}, []
    overwrite = run.overwrite_output_dir and run.resume_from_checkpoint is None
    shards = resolve_train_shards(data.train_shards)  # once, for every round
    for plan in plan_rounds(teacher_dir, distill, output_dir, fingerprint):
        if not overwrite and round_finished(plan.folder):
            logger.info("Round %d (%d -> %d steps) is finished in %s.", plan.index + 1, plan.teacher_steps,
                        plan.student_steps, plan.folder)  # fmt: skip
        else:
            logger.info("Round %d: distilling %d teacher steps into %d student steps in %s.", plan.index + 1,
                        plan.teacher_steps, plan.student_steps, plan.folder)  # fmt: skip
            round_run = round_run_config(run, plan, steps_per_round(distill, run), overwrite)
            trainer = DistillRound(plan, distill, data, round_run, scorers, shards)
            trainer.run()
            if trainer.state.stopped_by:
                return []  # stopped by a signal: the checkpoint is saved, the next run resumes the round
        results.append(read_round(plan.folder))
    return results


def read_round(folder: Path) -> dict[str, Any]:
    """A finished round's metrics.json, with its quality table (`scores`, `settings`) when it was scored."""
    result = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    quality = folder / QUALITY_FILE
    if quality.is_file():
        result.update(json.loads(quality.read_text(encoding="utf-8")))
    return result


def steps_per_round(distill: DistillConfig, run: TrainConfig) -> int:
    if distill.images_per_round is None:
        return distill.steps_per_round
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # as the Trainer counts them, before accelerate starts
    images_per_step = run.train_batch_size * run.gradient_accumulation_steps * processes
    return -(-distill.images_per_round // images_per_step)


def finish_distillation(teacher: str, distill: DistillConfig, run: TrainConfig, results: list[dict[str, Any]]) -> Path:
    """The final student at OUT: its pipeline, settings, the table of every round, the card (main process)."""
    output_dir = Path(run.output_dir)
    last = round_dir(output_dir, distill.end_steps)
    # The last round's student, whole (a latent student's vae/ and scaling factor, the class names, its steps).
    export_pipeline(PipelineParts.of(DDPMHubPipeline.from_pretrained(last)), output_dir)
    hparams = json.loads((last / CONFIG_FILE).read_text(encoding="utf-8"))
    hparams["model_source"] = f"distilled from {teacher}"
    write_json(output_dir / CONFIG_FILE, hparams)
    metrics = summary_metrics(teacher, distill, results)
    write_json(output_dir / METRICS_FILE, metrics)
    if (last / SAMPLE_GRID).is_file():
        with PIL.Image.open(last / SAMPLE_GRID) as grid:
            save_image(grid.copy(), output_dir / SAMPLE_GRID)
    info = card_info_for_run(hparams, metrics)
    info.has_sample_grid = (output_dir / SAMPLE_GRID).is_file()
    write_model_card(output_dir, info)
    table = [r for r in results if "scores" in r]
    if table:
        logger.info("Distillation quality:\n%s", format_quality_table(table))
    return output_dir


def summary_metrics(teacher: str, distill: DistillConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat values for metrics.json and the card: the teacher, the rounds, the step count, every score."""
    steps = [distill.start_steps] + [r["student_steps"] for r in results]
    metrics: dict[str, Any] = {
        "distilled_from": teacher,
        "distillation_rounds": " -> ".join(str(s) for s in steps),
        "sampling_steps": distill.end_steps,
        "optimizer_steps": sum(r.get("optimizer_steps", 0) for r in results),
        "training_minutes": round(sum(r.get("training_minutes", 0) for r in results), 2),
    }
    for r in results:
        for name, scores in r.get("scores", {}).items():
            for metric, value in scores.items():
                metrics[f"round {r['student_steps']}: {name} {metric}"] = round(value, 6)
    if results and "settings" in results[-1]:
        metrics["eval_settings"] = results[-1]["settings"]
    return metrics


def distill_run(
    distill: DistillConfig,
    teacher_dir: Path,
    data: DataConfig,
    run: TrainConfig,
    hub: HubConfig,
    fingerprint: str | None = None,
) -> Path:
    """Every round, then the final student at OUT and its upload; returns OUT (`fingerprint`: the teacher's
    `teacher_fingerprint`, computed here when not given)."""
    from accelerate import PartialState

    from ..training import PushError, reported_as_setup_errors
    from ..training.components import make_publisher

    output_dir = Path(run.output_dir)
    with reported_as_setup_errors():
        publisher = make_publisher(hub, output_dir)  # fails fast on a bad token or repo id
    try:
        results = run_rounds(teacher_dir, distill, data, run, fingerprint or teacher_fingerprint(teacher_dir))
        if not results:
            return output_dir  # stopped by a signal
        if PartialState().is_main_process:
            finish_distillation(distill.teacher, distill, run, results)
            logger.info("Saved the %d-step student to %s", distill.end_steps, output_dir)
            if publisher is not None:
                try:
                    # A local teacher by its folder's name: commit messages are public, local paths are not.
                    local = Path(distill.teacher)
                    teacher = local.resolve().name if local.exists() else distill.teacher
                    publisher.push_final(f"Distilled {teacher} to {distill.end_steps} steps")
                except Exception as error:
                    raise PushError(
                        f"the student is saved in {output_dir}, but the upload to {publisher.repo_id} failed: "
                        f"{error}. Push it later with: ddpm-hub push {output_dir} --repo_id {publisher.repo_id}"
                    ) from error
    finally:
        if publisher is not None:
            publisher.close()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # kept by every round for the next (`end_training`)
    return output_dir
