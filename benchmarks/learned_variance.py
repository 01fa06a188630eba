"""Learned variances against DDPM's fixed one after the same training time: bits/dim and FID at few ancestral steps.

    python benchmarks/learned_variance.py --budget_seconds 300 --dataset_name twemoji --output learned_variance.json
    python benchmarks/learned_variance.py --max_train_steps 1500 --dataset_name twemoji   # a noisy machine: steps
    python benchmarks/learned_variance.py --budget_seconds 3600 --dataset_name huggan/smithsonian_butterflies_subset \\
        --num_samples 10000 --features efficientnet-lite0 --nll_images 1000 -- \\
        --model ddpm-64 --resolution 64 --train_batch_size 64 --mixed_precision bf16

Two runs of the same number of optimizer steps, the budget's at the simple loss's speed (one calibration run, as
`quality_at_budget.py` does; the hybrid loss's bound term costs little, and one shared count keeps a busy machine's
noise out of the comparison; each run's wall time is reported): the simple loss with the fixed variance (DDPM), and
the hybrid loss with learned variances (Improved DDPM, `--loss_type hybrid --variance_type learned_range`). Flags
after `--` go to both. Each
saved EMA pipeline is then measured with `ddpm-hub eval`'s code: the negative log-likelihood of `--nll_images`
training images in bits/dim (`--nll_steps`: the bound of the respaced process; the full T-step bound without it),
and FID/KID of `--num_samples` images from the ancestral `ddpm` sampler at each of `--steps`. One JSON object is
printed (and written to `--output`), then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from quality_at_budget import calibrate, train

RUNS = {
    "simple loss, fixed variance": [],
    "hybrid loss, learned variance": ["--loss_type", "hybrid", "--variance_type", "learned_range"],
}


def measure(output_dir: Path, reference: str, args) -> dict:
    """bits/dim and FID/KID at each number of ancestral steps of the pipeline in `output_dir`."""
    from ddpm_hub.evaluation.evaluate import evaluate_model

    started = time.perf_counter()
    nll = evaluate_model(
        str(output_dir), reference, metrics="nll", num_samples=args.nll_images, nll_steps=args.nll_steps,
        batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    record = {key: value for key, value in nll.items() if key.startswith("nll_")}
    record["nll_seconds"] = round(time.perf_counter() - started, 1)
    for steps in args.steps:
        started = time.perf_counter()
        scores = evaluate_model(
            str(output_dir), reference, metrics=args.metrics, sampler="ddpm", num_inference_steps=steps,
            num_samples=args.num_samples, features=args.features, batch_size=args.batch_size, seed=args.seed,
        )  # fmt: skip
        record[f"ddpm_{steps}"] = {key: scores[key] for key in ("fid", "kid_mean", "kid_std") if key in scores}
        record[f"ddpm_{steps}"]["seconds"] = round(time.perf_counter() - started, 1)
    return record


def table(results: dict, args) -> str:
    steps = " | ".join(f"FID, {n} steps" for n in args.steps)
    lines = [f"| run | optimizer steps | bits/dim | {steps} |", "| --- | ---: | ---: |" + " ---: |" * len(args.steps)]
    for name, result in results.items():
        fids = " | ".join(f"{result[f'ddpm_{n}'].get('fid', float('nan')):.2f}" for n in args.steps)
        lines.append(
            f"| {name} | {result['optimizer_steps']} | {result['nll_bits_per_dim']:.3f} "
            f"± {result['nll_bits_per_dim_sem']:.3f} | {fids} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget_seconds", type=float, default=None, help="Training time of each run.")
    parser.add_argument(
        "--max_train_steps", type=int, default=None, help="Or: this many optimizer steps (no calibration)."
    )
    parser.add_argument("--dataset_name", default=None, help="As for training (default: twemoji).")
    parser.add_argument("--train_data_dir", default=None, help="As for training.")
    parser.add_argument("--calibration_steps", type=int, default=30)
    parser.add_argument("--logging_steps", type=int, default=5)
    parser.add_argument("--nll_images", type=int, default=256, help="Training images whose bits/dim are measured.")
    parser.add_argument("--nll_steps", type=int, default=None, help="Respaced bound (default: every timestep).")
    parser.add_argument("--num_samples", type=int, default=2048, help="Images sampled for FID at each step count.")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100], help="Ancestral sampling steps.")
    parser.add_argument("--features", default="efficientnet-lite0")
    parser.add_argument("--metrics", default="fid,kid")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="Also write the JSON object here.")
    parser.add_argument("--keep", default=None, help="Keep the two trained pipelines in this folder.")
    args = parser.parse_args(argv)
    if (args.budget_seconds is None) == (args.max_train_steps is None):
        parser.error("Pass either --budget_seconds or --max_train_steps.")
    if (args.budget_seconds or args.max_train_steps) <= 0:
        parser.error("--budget_seconds and --max_train_steps must be positive.")
    if args.dataset_name and args.train_data_dir:
        parser.error("Pass either --dataset_name or --train_data_dir, not both.")
    reference = args.train_data_dir or args.dataset_name or "twemoji"
    args.data_flags = ["--train_data_dir", reference] if args.train_data_dir else ["--dataset_name", reference]
    from ddpm_hub.evaluation import check_sample_count, parse_metrics

    try:
        check_sample_count(args.num_samples, args.features, parse_metrics(args.metrics))
    except ValueError as error:
        parser.error(str(error))

    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        images_per_second, batch, steps = None, None, args.max_train_steps
        if args.budget_seconds is not None:
            images_per_second, batch = calibrate(flags, args)
            steps = max(1, round(args.budget_seconds * images_per_second / batch))
        for index, (name, run_flags) in enumerate(RUNS.items()):
            output_dir = root / f"run-{index}"
            seconds = train([*flags, *run_flags], output_dir, steps, args)
            results[name] = {
                "flags": [*flags, *run_flags], "calibrated_images_per_second": images_per_second,
                "optimizer_steps": steps, "total_batch_size": batch, "run_wall_seconds": round(seconds, 1),
                **measure(output_dir, reference, args),
            }  # fmt: skip
    record = {
        "budget_seconds": args.budget_seconds, "reference": reference, "features": args.features,
        "num_samples": args.num_samples, "nll_images": args.nll_images, "nll_steps": args.nll_steps,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
        "runs": results,
    }  # fmt: skip
    print(json.dumps(record, indent=2, default=str))
    print(table(results, args))
    if args.output:
        from ddpm_hub.files import write_json

        write_json(args.output, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
