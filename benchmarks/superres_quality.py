"""Super-resolution at a fixed training budget: an upscaler against bicubic, a cascade against a direct model.

    OMP_NUM_THREADS=1 python benchmarks/superres_quality.py --budget_seconds 900 --work_dir sr-bench \
        --output superres.json -- --lr_warmup_steps 5 --train_batch_size 8

Three models of `--model` are trained on the same data, each for a wall-clock budget turned into optimizer steps by
a short calibration run (`quality_at_budget.py`'s): an upscaler from `--low_resolution` (16) to `--resolution` (64)
and a base model at the low resolution for `--budget_seconds` each, and a model at the full resolution for twice
that, the cascade's total. Then:

- `upscaler`: `ddpm-hub eval`'s code on the upscaler: the first `--num_samples` images of the data, downsampled,
  upscaled, scored with PSNR, SSIM, consistency and FID beside bicubic upscaling of the same inputs;
- `cascade`: FID of `--num_samples` cascade samples (base, then upscaler at `--noise_level`) and of as many samples of
  the full-resolution model, both against the data's reference statistics at the full resolution;
- `docs/superres.png` (`--figure`): rows of low-res | bicubic | ours | original for a few held images.

Flags after `--` go to every training run. `--stages` picks what to (re)do; trained models are kept in `--work_dir`
and reused. One JSON object is printed (and written to `--output`). Compare only figures of one machine, budget,
data set, extractor and sample count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from quality_at_budget import calibrate, train

BUDGET_SHARE = {"upscaler": 1, "base": 1, "direct": 2}  # the full-resolution model gets the cascade's two budgets


def model_flags(name: str, args) -> list[str]:
    """The flags of the training run of `name`: the upscaler, the base model or the full-resolution one."""
    resolution = {"upscaler": args.resolution, "base": args.low_resolution, "direct": args.resolution}[name]
    if name == "upscaler":
        model = args.upscaler_model or args.model
        noise = ["--low_res_noise_max", str(args.low_res_noise_max)] if args.low_res_noise_max is not None else []
        return ["--model", model, "--resolution", str(resolution), "--low_resolution", str(args.low_resolution), *noise]
    return ["--model", args.model, "--resolution", str(resolution)]


def trained(name: str, flags: list[str], args) -> tuple[Path, dict]:
    """The model `name`, trained for its share of the budget unless `--work_dir` already holds it."""
    from ddpm_hub.files import write_json

    folder = Path(args.work_dir) / name
    record_file = Path(args.work_dir) / f"{name}.budget.json"  # beside the run: a run folder holds a run's names only
    if record_file.is_file() and (folder / "model_index.json").is_file():
        return folder, json.loads(record_file.read_text())
    run_flags = [*model_flags(name, args), *flags]
    images_per_second, batch = calibrate(run_flags, args)
    budget = args.budget_seconds * BUDGET_SHARE[name]
    steps = max(1, round(budget * images_per_second / batch))
    seconds = train(run_flags, folder, steps, args)
    record = {"flags": run_flags, "budget_seconds": budget, "calibrated_images_per_second": round(images_per_second, 2),
              "optimizer_steps": steps, "run_wall_seconds": round(seconds, 1)}  # fmt: skip
    write_json(record_file, record)
    return folder, record


def upscaler_scores(folder: Path, args) -> dict:
    from ddpm_hub.evaluation.evaluate import evaluate_model

    return evaluate_model(
        str(folder), args.dataset_name, num_samples=args.num_samples, sampler=args.sampler,
        num_inference_steps=args.num_inference_steps, metrics="psnr,ssim,consistency,fid", features=args.features,
        seed=args.seed, noise_level=0,
    )  # fmt: skip


def sample_fid(sample, args, reference) -> float:
    """FID of `--num_samples` images from `sample(batch_size, generators)` (pt in [0, 1]) against `reference`."""
    from ddpm_hub.evaluation.evaluate import score
    from ddpm_hub.evaluation.features import to_uint8

    batches = []
    for start in range(0, args.num_samples, args.batch_size):
        seeds = range(args.seed + start, args.seed + min(start + args.batch_size, args.num_samples))
        batches.append(to_uint8(sample(len(seeds), [torch.Generator().manual_seed(s) for s in seeds])))
    features = reference["extractor"].extract(np.concatenate(batches))
    return score(features, reference["stats"], ("fid",), seed=args.seed)["fid"]


def cascade_scores(base: Path, upscaler: Path, direct: Path, args) -> dict:
    from ddpm_hub import DDPMHubPipeline
    from ddpm_hub.evaluation.features import get_extractor
    from ddpm_hub.evaluation.reference import reference_source, reference_statistics
    from ddpm_hub.superres import DDPMHubCascade

    extractor = get_extractor(args.features, "cpu", args.batch_size)
    identity, images = reference_source(args.dataset_name)
    size = args.resolution
    stats = reference_statistics(extractor, identity, resolution=size, images=lambda: images(size, 3))
    reference = {"extractor": extractor, "stats": stats}
    steps = args.num_inference_steps
    cascade = DDPMHubCascade.from_pretrained(str(base), upscalers=[str(upscaler)]).set_sampler(args.sampler)
    cascade.set_progress_bar_config(disable=True)
    model = DDPMHubPipeline.from_pretrained(str(direct)).set_sampler(args.sampler)
    model.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    cascade_fid = sample_fid(
        lambda n, g: cascade(batch_size=n, generator=g, num_inference_steps=steps, noise_level=args.noise_level,
                             output_type="pt").images, args, reference)  # fmt: skip
    cascade_seconds = time.perf_counter() - started
    started = time.perf_counter()
    direct_fid = sample_fid(
        lambda n, g: model(batch_size=n, generator=g, num_inference_steps=steps, output_type="pt").images,
        args,
        reference,
    )
    return {
        "cascade_fid": cascade_fid, "direct_fid": direct_fid, "noise_level": args.noise_level,
        "cascade_sampling_seconds": round(cascade_seconds, 1),
        "direct_sampling_seconds": round(time.perf_counter() - started, 1),
        "reference": stats.source, "reference_images": stats.num_images,
    }  # fmt: skip


def figure(upscaler: Path, args, count: int = 6) -> str:
    """Rows of low-res | bicubic | ours | original for `count` images of the data (the last ones, not the first
    `--num_samples` that the scores use), saved as `--figure`."""
    from diffusers.utils import make_image_grid

    from ddpm_hub import DDPMHubPipeline
    from ddpm_hub.app.panels import upscale_image
    from ddpm_hub.data import load_images

    pipe = DDPMHubPipeline.from_pretrained(str(upscaler))
    pipe.set_progress_bar_config(disable=True)
    pixels = load_images(dataset_name=args.dataset_name, resolution=args.resolution, center_crop=True).pixels[-count:]
    import PIL.Image

    rows = [
        upscale_image(pipe, PIL.Image.fromarray(np.asarray(image).transpose(1, 2, 0)), args.sampler,
                      args.num_inference_steps, seed=args.seed + i).strip
        for i, image in enumerate(pixels)
    ]  # fmt: skip
    from ddpm_hub.files import save_image

    return str(save_image(make_image_grid(rows, len(rows), 1), args.figure))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget_seconds", type=float, required=True, help="Training time of the upscaler and base.")
    parser.add_argument("--dataset_name", default="twemoji")
    parser.add_argument("--model", default="small", help="The preset of the base and full-resolution models.")
    parser.add_argument("--upscaler_model", default=None, help="The upscaler's preset (default: --model).")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--low_resolution", type=int, default=16)
    parser.add_argument("--work_dir", required=True, help="Where the trained models are kept (and reused).")
    parser.add_argument("--stages", default="upscaler,cascade,figure")
    parser.add_argument("--calibration_steps", type=int, default=20)
    parser.add_argument("--logging_steps", type=int, default=5)
    parser.add_argument("--num_samples", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--num_inference_steps", type=int, default=25)
    parser.add_argument("--low_res_noise_max", type=int, default=None, help="The upscaler's (default: training's).")
    parser.add_argument("--noise_level", type=int, default=0, help="The upscaler's level in the cascade.")
    parser.add_argument("--features", default="efficientnet-lite0-112")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default="docs/superres.png")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    args.data_flags = ["--dataset_name", args.dataset_name]
    stages = args.stages.split(",")
    record: dict = {"device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads()}
    upscaler, record["upscaler_run"] = trained("upscaler", flags, args)
    if "upscaler" in stages:
        record["upscaler"] = {k: v for k, v in upscaler_scores(upscaler, args).items() if k != "model"}
    if "cascade" in stages:
        base, record["base_run"] = trained("base", flags, args)
        direct, record["direct_run"] = trained("direct", flags, args)
        record["cascade"] = cascade_scores(base, upscaler, direct, args)
    if "figure" in stages:
        record["figure"] = figure(upscaler, args)
    text = json.dumps(record, indent=2, default=str)
    print(text)
    if args.output:
        from ddpm_hub.files import write_json

        write_json(args.output, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
