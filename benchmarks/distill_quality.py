"""A whole progressive distillation of a small model, and the table it is judged by: FID/KID (offline extractor) of
each round's student at its steps, the teacher with DDIM and with DPM-Solver++ at the same steps, and the teacher
at many steps.

    OMP_NUM_THREADS=1 python benchmarks/distill_quality.py  # CPU: a tiny teacher on shapes, 8 -> 4 -> 2 steps
    python benchmarks/distill_quality.py --teacher_steps 20000 --steps_per_round 4000 --model small \\
        --dataset_name twemoji --start_steps 64 --end_steps 2 --num_samples 2048 -- --mixed_precision bf16

Without `--teacher`, a teacher is trained first (`--model`, `--teacher_steps` optimizer steps on `--dataset_name`,
v-prediction, cosine schedule). Flags after `--` go to both `train_unconditional.py` and `ddpm-hub distill`
unchanged. The distillation's own `metrics.json` holds every figure; the table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def train_teacher(args, folder: Path, extra: list[str]) -> Path:
    from ddpm_hub.train import main

    argv = [
        "--model", args.model, "--dataset_name", args.dataset_name, "--max_train_steps", str(args.teacher_steps),
        "--train_batch_size", str(args.train_batch_size), "--output_dir", str(folder), "--overwrite_output_dir",
        "--logger", "none",
        "--prediction_type", "v_prediction", "--ddpm_beta_schedule", "cosine", "--eval_batch_size", "4",
        "--ddpm_num_inference_steps", "10", "--checkpointing_steps", "1000000000", "--seed", str(args.seed), *extra,
    ]  # fmt: skip
    if main(argv) != 0:
        raise SystemExit(f"training the teacher failed: {' '.join(argv)}")
    return folder


def distill(args, teacher: Path, folder: Path, extra: list[str]) -> float:
    from ddpm_hub.cli import main

    argv = [
        "distill", str(teacher), "--output_dir", str(folder), "--overwrite_output_dir",
        "--dataset_name", args.dataset_name, "--start_steps", str(args.start_steps), "--end_steps", str(args.end_steps),
        "--steps_per_round", str(args.steps_per_round), "--train_batch_size", str(args.train_batch_size),
        "--learning_rate", str(args.learning_rate), "--lr_warmup_steps", "0", "--logger", "none",
        "--eval_num_samples", str(args.num_samples), "--eval_features", args.features, "--eval_metrics", "fid,kid",
        "--eval_teacher_steps", str(args.eval_teacher_steps), "--eval_batch_size", "64", "--seed", str(args.seed),
        "--checkpointing_steps", "1000000000", "--eval_every_round", *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"distillation failed: {' '.join(argv)}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default=None, help="A trained pipeline (default: train one first).")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dataset_name", default="shapes")
    parser.add_argument("--teacher_steps", type=int, default=800)
    parser.add_argument("--start_steps", type=int, default=8)
    parser.add_argument("--end_steps", type=int, default=2)
    parser.add_argument("--steps_per_round", type=int, default=200)
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--num_samples", type=int, default=256)
    parser.add_argument("--features", default="efficientnet-lite0-112")
    parser.add_argument("--eval_teacher_steps", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=None, help="Keep the runs here (default: a temporary folder).")
    args, extra = parser.parse_known_args()
    extra = [flag for flag in extra if flag != "--"]
    from ddpm_hub.distill.quality import format_quality_table

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.output_dir or scratch)
        teacher = Path(args.teacher) if args.teacher else train_teacher(args, root / "teacher", extra)
        seconds = distill(args, teacher, root / "student", extra)
        metrics = json.loads((root / "student" / "metrics.json").read_text(encoding="utf-8"))
        rounds = []
        for folder in sorted((root / "student").glob("round-*"), key=lambda p: -int(p.name.split("-")[1])):
            round_metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            quality = json.loads((folder / "quality.json").read_text(encoding="utf-8"))
            rounds.append({**round_metrics, **quality})
    print(
        f"distillation {metrics['distillation_rounds']} of {teacher}: {seconds / 60:.1f} min; "
        f"{metrics.get('eval_settings')}"
    )
    print(format_quality_table(rounds))


if __name__ == "__main__":
    main()
