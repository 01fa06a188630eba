"""Post-hoc EMA on a fixed budget: train with --post_hoc_ema, then score a sweep of EMA lengths (FID against sigma_rel)
beside the run's own fixed-decay EMA, and report the disk cost of a snapshot.

    python benchmarks/posthoc_ema_sweep.py --max_train_steps 3000 --output_dir bench-phema        # small, Twemoji, CPU
    python benchmarks/posthoc_ema_sweep.py --max_train_steps 50000 --output_dir bench-phema-64 --num_samples 10000 \\
        -- --model ddpm-64 --resolution 64 --train_batch_size 64 --mixed_precision bf16           # a GPU

Flags after `--` go to train_unconditional.py unchanged. The run (`OUTPUT_DIR/run`) is trained for
`--max_train_steps` optimizer steps (the learning-rate schedule ends there) with `--post_hoc_ema`, its snapshots
every `--ema_snapshot_steps` (default: a 32nd of the run), and kept, so the sweep can be repeated with other
flags. Then `ddpm-hub ema OUTPUT_DIR/run --sweep ... --output_dir OUTPUT_DIR/best` samples every length (and the
run's pipeline, its fixed-decay EMA) with the same seeds and scores them against the training data with `--features`
(EfficientNet-Lite0 by default, offline). One JSON object is printed and written to `OUTPUT_DIR/posthoc_ema.json`;
the curve's plot is `OUTPUT_DIR/best/posthoc_ema_sweep.png`. Compare only objects from the same machine, data set,
extractor and sample count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def train(args, flags: list[str]) -> float:
    """The run, with post-hoc EMA; its wall time in seconds (skipped if the run already finished)."""
    from ddpm_hub.train import main

    run = Path(args.output_dir) / "run"
    if (run / "metrics.json").is_file():
        print(f"Reusing the finished run in {run}.")
        return float("nan")
    snapshots = ["--ema_snapshot_steps", str(args.ema_snapshot_steps)] if args.ema_snapshot_steps else []
    argv = [
        "--dataset_name", args.dataset_name, "--output_dir", str(run), "--max_train_steps", str(args.max_train_steps),
        "--post_hoc_ema", "--ema_sigma_rels", args.ema_sigma_rels, *snapshots, "--seed", str(args.seed),
        "--logger", "none", "--checkpointing_steps", str(max(args.max_train_steps // 4, 1)),
        "--save_model_epochs", "1000000000", "--save_images_epochs", "1000000000",
        *(["--resume_from_checkpoint", "latest"] if (run / "training_config.json").is_file() else []), *flags,
    ]  # fmt: skip
    started = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"training failed: train_unconditional.py {' '.join(argv)}")
    return time.perf_counter() - started


def sweep(args) -> float:
    from ddpm_hub.cli import main

    argv = [
        "ema", str(Path(args.output_dir) / "run"), "--sweep", args.sweep, "--output_dir",
        str(Path(args.output_dir) / "best"), "--num_samples", str(args.num_samples), "--sampler", args.sampler,
        "--num_inference_steps", str(args.num_inference_steps), "--features", args.features, "--metrics", args.metrics,
        "--seed", str(args.seed),
    ]  # fmt: skip
    started = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"the sweep failed: ddpm-hub {' '.join(argv)}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max_train_steps", type=int, required=True, help="Optimizer steps to train.")
    parser.add_argument("--output_dir", required=True, help="Keeps the run (run/), the best pipeline (best/), JSON.")
    parser.add_argument("--dataset_name", default="twemoji", help="As for training.")
    parser.add_argument("--ema_sigma_rels", default="0.05,0.10")
    parser.add_argument("--ema_snapshot_steps", type=int, default=None)
    parser.add_argument("--sweep", default="0.02:0.25:12", help="START:STOP:COUNT sigma_rels to score.")
    parser.add_argument("--num_samples", type=int, default=2048)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--features", default="efficientnet-lite0")
    parser.add_argument("--metrics", default="fid,kid")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train_seconds = train(args, flags)
    sweep_seconds = sweep(args)
    output_dir = Path(args.output_dir)
    curve = json.loads((output_dir / "best" / "posthoc_ema_sweep.json").read_text())
    settings = json.loads((output_dir / "run" / "training_config.json").read_text())
    snapshots = sorted((output_dir / "run" / "ema-snapshots").glob("step-*.safetensors"))
    import torch

    record = {
        "flags": flags, "max_train_steps": args.max_train_steps, "model": settings.get("model"),
        "unet_parameters": settings.get("unet_parameters"), "ema_sigma_rels": settings.get("ema_sigma_rels"),
        "ema_snapshot_steps": settings.get("ema_snapshot_steps"), "snapshots": len(snapshots),
        "snapshot_bytes": snapshots[-1].stat().st_size if snapshots else None,
        "train_wall_seconds": round(train_seconds, 1), "sweep_wall_seconds": round(sweep_seconds, 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
        **{k: curve[k] for k in ("extractor", "num_images", "sampler", "num_inference_steps", "reference", "step")},
        "curve": [{k: p[k] for k in ("sigma_rel", "fid", "kid_mean") if k in p} for p in curve["curve"]],
        "best": {k: curve["best"][k] for k in ("sigma_rel", "fid")}, "fixed_decay_ema": curve["run_pipeline"],
    }  # fmt: skip
    from ddpm_hub.files import write_json

    write_json(output_dir / "posthoc_ema.json", record)
    print(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
