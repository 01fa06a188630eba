"""Training throughput (images/s) of train_unconditional.py, and of a re-creation of diffusers' example loop.

    python benchmarks/train_throughput.py --model ddpm-64 --resolution 64 --train_batch_size 64 --mixed_precision bf16
    python benchmarks/train_throughput.py --model ddpm-64 --mixed_precision bf16 --modes eager reduce-overhead
    python benchmarks/train_throughput.py --model small --resolution 32 --train_batch_size 16 --baseline  # CPU

`ours` runs the real training command (`ddpm_hub.train.main`) on the built-in Twemoji set once per `--modes`
entry (`eager`, or a `--compile_mode`) and reads the images/s it logs every `--logging_steps` steps; the first
interval (warmup) is dropped and the median of the rest is reported. Compilation is reported apart, as
`compile_seconds` (the first optimizer step), from a fresh compiler cache unless `--compile_cache_dir` is given.
`--baseline` also times, in the same process and on the same data, a loop that does per step what diffusers'
examples/unconditional_image_generation/train_unconditional.py does: PIL transforms per image in the DataLoader,
`loss.item()` every step, EMA updated parameter by parameter, unfused AdamW, contiguous (not channels_last) tensors.
The example itself cannot run here (it needs torchvision), so this is a re-creation; compare the two figures of one
run, on one machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from ddpm_hub.train_step import COMPILE_MODES


def measure_ours(args, mode: str = "eager") -> dict:
    from ddpm_hub.train import main

    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "--output_dir", tmp, "--model", args.model, "--resolution", str(args.resolution),
            "--dataset_name", args.dataset_name, "--train_batch_size", str(args.train_batch_size),
            "--max_train_steps", str(args.steps), "--logging_steps", str(args.logging_steps),
            "--mixed_precision", args.mixed_precision, "--logger", "none", "--checkpointing_steps", "1000000",
            "--save_images_epochs", "1000000", "--save_model_epochs", "1000000", "--eval_batch_size", "1",
            "--ddpm_num_inference_steps", "1", "--lr_warmup_steps", "0",
        ]  # fmt: skip
        if mode != "eager":
            argv += ["--compile", "--compile_backend", args.compile_backend]
            argv += ["--compile_cache_dir", args.compile_cache_dir or f"{tmp}/cache"]
            if args.compile_backend == "inductor":  # the modes are inductor's; other backends (smoke runs) have none
                argv += ["--compile_mode", mode]
        if args.channels_last:
            argv.append("--channels_last")
        if args.allow_tf32:
            argv.append("--allow_tf32")
        if args.vae_name_or_path:  # a latent run: images are encoded once before the timed steps
            argv += ["--vae_name_or_path", args.vae_name_or_path]
        if main(argv) != 0:
            raise SystemExit("training failed")
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    rates = [row["images_per_second"] for row in rows if "images_per_second" in row][1:]
    memory = max((row.get("gpu_memory_gb", 0) for row in rows), default=0)
    compile_seconds = next((row["compile_seconds"] for row in rows if "compile_seconds" in row), None)
    return {"images_per_second": statistics.median(rates), "intervals": rates, "gpu_memory_gb": memory,
            "compile_seconds": compile_seconds}  # fmt: skip


class PILImages(torch.utils.data.Dataset):
    """Per-image PIL decode-free transforms, as torchvision's Compose in the example does them."""

    def __init__(self, images: list[PIL.Image.Image], resolution: int):
        self.images, self.resolution = images, resolution

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index].convert("RGB")
        # Resize shorter side, centre crop, random flip, to tensor, normalise: one image at a time.
        scale = self.resolution / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), PIL.Image.BILINEAR)
        left, top = (image.width - self.resolution) // 2, (image.height - self.resolution) // 2
        image = image.crop((left, top, left + self.resolution, top + self.resolution))
        if torch.rand(()) < 0.5:
            image = image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return {"input": (array - 0.5) / 0.5}


def measure_baseline(args) -> dict:
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from ddpm_hub.data import draw_shapes, twemoji_dir
    from ddpm_hub.models import build_unet, resolve_spec

    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    if args.dataset_name == "twemoji":
        images = [PIL.Image.open(path).convert("RGBA") for path in sorted(twemoji_dir().glob("*.png"))]
    else:
        images = draw_shapes()
    model = build_unet(resolve_spec(args.model, args.resolution))
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    loader = torch.utils.data.DataLoader(
        PILImages(images, args.resolution), batch_size=args.train_batch_size, shuffle=True
    )
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=0, num_training_steps=args.steps)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    ema.to(accelerator.device)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    step, rates, start = 0, [], time.perf_counter()
    while step < args.steps:
        for batch in loader:
            clean_images = batch["input"]
            noise = torch.randn(clean_images.shape, device=clean_images.device)
            timesteps = torch.randint(0, 1000, (clean_images.shape[0],), device=clean_images.device).long()
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            with accelerator.accumulate(model):
                loss = F.mse_loss(model(noisy_images, timesteps).sample.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            ema.step(model.parameters())
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "step": step}  # host sync
            accelerator.log(logs, step=step)
            step += 1
            if step % args.logging_steps == 0:
                rates.append(args.logging_steps * args.train_batch_size / (time.perf_counter() - start))
                start = time.perf_counter()
            if step >= args.steps:
                break
    memory = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0
    return {"images_per_second": statistics.median(rates[1:]), "intervals": rates[1:], "gpu_memory_gb": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ddpm-64")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--dataset_name", default="twemoji", choices=["twemoji", "shapes"])
    parser.add_argument("--steps", type=int, default=110, help="Optimizer steps per measurement.")
    parser.add_argument("--logging_steps", type=int, default=10, help="Steps per timed interval.")
    parser.add_argument(
        "--modes", nargs="+", default=["eager"], choices=["eager", *COMPILE_MODES],
        help="Time the eager step and/or the step compiled with these torch.compile modes.",
    )  # fmt: skip
    parser.add_argument("--compile_backend", default="inductor", help="aot_eager: trace without code generation (CPU).")
    parser.add_argument("--compile_cache_dir", default=None, help="Reuse this compiler cache (warm); default: cold.")
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--allow_tf32", action="store_true")
    parser.add_argument("--vae_name_or_path", default=None, help="Train on this VAE's latents (see docs/latent.md).")
    parser.add_argument("--baseline", action="store_true", help="Also time the diffusers-example-style loop.")
    parser.add_argument("--repeats", type=int, default=1, help="Measure each loop this many times, alternating.")
    parser.add_argument("--output", default=None, help="Write the results as JSON here.")
    args = parser.parse_args()

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    results = {"settings": vars(args), "device": device, "torch": torch.__version__}
    # Alternate the loops so that drifting machine load or clocks do not favour whichever runs last.
    runs: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    runs["baseline"] = []
    for _ in range(args.repeats):
        for mode in args.modes:
            runs[mode].append(measure_ours(args, mode))
        if args.baseline:
            runs["baseline"].append(measure_baseline(args))
    results["ours"] = {}
    for name, measured in runs.items():
        if measured:
            summary = {
                "images_per_second": statistics.median(m["images_per_second"] for m in measured),
                "runs": measured,
            }
            summary["gpu_memory_gb"] = max(m.get("gpu_memory_gb", 0) for m in measured)
            if name != "baseline" and name != "eager":
                summary["compile_seconds"] = [m["compile_seconds"] for m in measured]
            if name == "baseline":
                results["baseline"] = summary
            else:
                results["ours"][name] = summary
    if args.baseline:
        baseline = results["baseline"]["images_per_second"]
        results["speedup"] = {mode: r["images_per_second"] / baseline for mode, r in results["ours"].items()}
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
