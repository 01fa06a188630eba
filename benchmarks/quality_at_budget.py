"""Sample quality after a fixed wall-clock training budget: FID/KID (offline extractor) of one set of training flags.

    python benchmarks/quality_at_budget.py --budget_seconds 1200 --dataset_name twemoji --output ours.json
    python benchmarks/quality_at_budget.py --budget_seconds 1200 --dataset_name twemoji --output diffusers.json -- \\
        --ddpm_beta_schedule linear --prediction_type epsilon --snr_gamma 0 --learning_rate 1e-4 --lr_warmup_steps 500

Flags after `--` go to train_unconditional.py unchanged. The budget is turned into a number of optimizer steps
by a short calibration run with the same flags (its images/s, the first logging interval dropped), so that the
learning-rate schedule ends where the budget does, as it would in a real run of that length; the training time
actually spent is reported beside the budget (`run_wall_seconds`: the whole command, setup and export included).
The saved EMA pipeline is then sampled (`--num_samples`,
`--sampler`, `--num_inference_steps`, seeds 0..N-1) and scored against the training data with `--features`
(EfficientNet-Lite0 by default, offline). One JSON object is printed (and written to `--output`). Compare only
objects from the same machine, budget, data set, extractor and sample count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def train(flags: list[str], output_dir: Path, max_train_steps: int, args) -> float:
    from ddpm_hub.train import main

    argv = [
        *args.data_flags, "--output_dir", str(output_dir), "--overwrite_output_dir",
        "--max_train_steps", str(max_train_steps), "--logger", "none", "--checkpointing_steps", "1000000000",
        "--save_images_epochs", "1000000000",
        "--save_model_epochs", "1000000000", "--logging_steps", str(args.logging_steps), "--seed", str(args.seed),
        "--eval_batch_size", "4", "--ddpm_num_inference_steps", "10", *flags,  # a small final preview grid
    ]  # fmt: skip
    started = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"training failed: {' '.join(argv)}")
    return time.perf_counter() - started


def calibrate(flags: list[str], args) -> tuple[float, int]:
    """Images/s of these flags on this machine (median over logging intervals after the first) and batch size."""
    with tempfile.TemporaryDirectory() as tmp:
        train(flags, Path(tmp), args.calibration_steps, args)
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        config = json.loads((Path(tmp) / "training_config.json").read_text())
    rates = [row["images_per_second"] for row in rows if "images_per_second" in row]
    return statistics.median(rates[1:] or rates), int(config["total_batch_size"])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget_seconds", type=float, required=True, help="Training time to spend (excluding setup).")
    parser.add_argument("--dataset_name", default=None, help="As for training (default: twemoji).")
    parser.add_argument("--train_data_dir", default=None, help="As for training.")
    parser.add_argument("--calibration_steps", type=int, default=30)
    parser.add_argument("--logging_steps", type=int, default=5)
    parser.add_argument("--num_samples", type=int, default=2048)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--features", default="efficientnet-lite0")
    parser.add_argument("--metrics", default="fid,kid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="Also write the JSON object here.")
    parser.add_argument("--keep", default=None, help="Keep the trained pipeline in this folder.")
    args = parser.parse_args(argv)
    if args.budget_seconds <= 0:
        parser.error(f"--budget_seconds must be positive, got {args.budget_seconds}.")
    if args.dataset_name and args.train_data_dir:
        parser.error("Pass either --dataset_name or --train_data_dir, not both.")
    args.data_flags = (
        ["--train_data_dir", args.train_data_dir]
        if args.train_data_dir
        else ["--dataset_name", args.dataset_name or "twemoji"]
    )
    from ddpm_hub.evaluation import check_sample_count, parse_metrics

    try:
        check_sample_count(args.num_samples, args.features, parse_metrics(args.metrics))
    except ValueError as error:
        parser.error(str(error))

    images_per_second, batch = calibrate(flags, args)
    steps = max(1, round(args.budget_seconds * images_per_second / batch))
    from ddpm_hub.evaluation.evaluate import evaluate_model

    with tempfile.TemporaryDirectory() as tmp:
        output_dir = Path(args.keep) if args.keep else Path(tmp) / "run"
        seconds = train(flags, output_dir, steps, args)
        result = evaluate_model(
            str(output_dir), args.train_data_dir or args.dataset_name or "twemoji", num_samples=args.num_samples,
            sampler=args.sampler, num_inference_steps=args.num_inference_steps, metrics=args.metrics,
            features=args.features, seed=args.seed,
        )  # fmt: skip
        final = json.loads((output_dir / "metrics.json").read_text())
    import torch

    record = {
        "flags": flags, "budget_seconds": args.budget_seconds,
        "calibrated_images_per_second": round(images_per_second, 2), "optimizer_steps": steps,
        "total_batch_size": batch,
        "training_seconds_at_calibrated_rate": round(steps * batch / images_per_second, 1),
        "run_wall_seconds": round(seconds, 1),  # the whole training command: setup, final preview and export included
        "final_loss": final.get("final_loss"), "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(), **{k: v for k, v in result.items() if k != "model"},
    }  # fmt: skip
    text = json.dumps(record, indent=2, default=str)
    print(text)
    if args.output:
        from ddpm_hub.files import write_json

        write_json(args.output, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
