"""Sampling throughput (images/s) of DDPMHubPipeline, eager and compiled, against diffusers' own pipelines.

    python benchmarks/sample_throughput.py --model ddpm-64 --resolution 64 --batch_size 64 --dtype bf16 \
        --runs ddim:50 dpmpp_2m:20
    python benchmarks/sample_throughput.py --model tiny --resolution 16 --batch_size 4 --runs ddim:5 --device cpu \
        --compile_backend aot_eager  # smoke run

One process, one UNet (a preset with random weights, or `--pretrained`; the speed does not depend on the weights),
one seed. For each `sampler:steps` of `--runs` it times
- `ours_eager`: `DDPMHubPipeline` with its device-side steps (the default);
- `ours_scheduler_steps`: the same pipeline stepping with the scheduler's own `step` (the path before issue 8);
- `ours_compiled`: `DDPMHubPipeline.compile()` (CUDA graphs on CUDA), on a copy of the UNet;
- `diffusers`: diffusers' `DDIMPipeline` (ddim) or `DDPMPipeline` (ddpm; dpmpp_2m, whose loop needs no input
  scaling) on the same UNet; samplers that scale their input (euler) have no diffusers baseline;
- `diffusers_compiled`: the same diffusers pipeline on the compiled copy of the UNet.
Every variant is called once to warm up (the compiled ones compile then: `compile_seconds` is that call's time less a
timed call's), then `--repeats` times, alternating. images/s is batch_size over the median seconds per call, the
final copy of the images to the host included (output_type "np" everywhere). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_pipeline(args):
    from ddpm_hub import DDPMHubPipeline, build_unet, make_noise_scheduler

    if args.pretrained:
        return DDPMHubPipeline.from_pretrained(args.pretrained)
    torch.manual_seed(0)
    return DDPMHubPipeline(unet=build_unet(args.model, args.resolution), scheduler=make_noise_scheduler())


def diffusers_baseline(sampler: str, unet, scheduler):
    """diffusers' pipeline for `sampler` on `unet`, or None where its loop cannot run that sampler correctly."""
    from diffusers import DDIMPipeline, DDPMPipeline

    if sampler == "ddim":
        return DDIMPipeline(unet=unet, scheduler=scheduler)  # DDIMPipeline makes a DDIMScheduler from the config
    if sampler in ("ddpm", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "deis"):
        return DDPMPipeline(unet=unet, scheduler=scheduler)  # these start at sigma 1 and scale no input
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - start


def measure(args) -> dict:
    from ddpm_hub import scheduler_from_name
    from ddpm_hub.devices import resolve_device

    device = resolve_device(args.device)
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    pipe = load_pipeline(args)
    pipe.unet.to(device=device, dtype=DTYPES[args.dtype]).eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    compiled_pipe = None
    if not args.no_compile:
        compiled_pipe = type(pipe)(unet=copy.deepcopy(pipe.unet), scheduler=pipe.scheduler)
        compiled_pipe.set_progress_bar_config(disable=True)
        compiled_pipe.compile(args.compile_mode, backend=args.compile_backend)
    training_config = pipe.scheduler.config

    results = {}
    for run in args.runs:
        sampler, steps = run.split(":")
        steps = int(steps)
        variants = {}

        pipe.set_sampler(sampler)
        if compiled_pipe is not None:
            compiled_pipe.set_sampler(sampler)

        def ours(pipeline, device_steps: bool, steps: int = steps):
            def call():
                pipeline.device_steps = device_steps
                generator = torch.Generator().manual_seed(0)
                pipeline(batch_size=args.batch_size, generator=generator, num_inference_steps=steps, output_type="np")

            return call

        def theirs(pipeline, steps: int = steps):
            def call():
                generator = torch.Generator().manual_seed(0)
                pipeline(batch_size=args.batch_size, generator=generator, num_inference_steps=steps, output_type="np")

            return call

        variants["ours_eager"] = ours(pipe, True)
        variants["ours_scheduler_steps"] = ours(pipe, False)
        if compiled_pipe is not None:
            variants["ours_compiled"] = ours(compiled_pipe, True)
        scheduler = scheduler_from_name(sampler, training_config)
        baseline = diffusers_baseline(sampler, pipe.unet, scheduler)
        if baseline is not None:
            baseline.set_progress_bar_config(disable=True)
            variants["diffusers"] = theirs(baseline)
            if compiled_pipe is not None:
                compiled_baseline = diffusers_baseline(sampler, compiled_pipe.unet, scheduler)
                compiled_baseline.set_progress_bar_config(disable=True)
                variants["diffusers_compiled"] = theirs(compiled_baseline)

        first = {name: timed(variant, device) for name, variant in variants.items()}  # warmup; compiles
        seconds = {name: [] for name in variants}
        peak_memory = {name: 0.0 for name in variants}
        for _ in range(args.repeats):
            for name, variant in variants.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                seconds[name].append(timed(variant, device))
                if device.type == "cuda":
                    peak_memory[name] = max(peak_memory[name], torch.cuda.max_memory_allocated(device) / 2**30)
        row = {}
        for name in variants:
            median = statistics.median(seconds[name])
            row[name] = {"images_per_second": args.batch_size / median, "seconds": seconds[name]}
            if "compiled" in name:  # the warmup call compiled; an estimate, as noisy as the calls it subtracts
                row[name].update(first_call_seconds=first[name], compile_seconds=max(0.0, first[name] - median))
            if device.type == "cuda":
                row[name]["gpu_memory_gb"] = peak_memory[name]
        if "diffusers" in row:
            for name in ("ours_eager", "ours_compiled"):
                if name in row:
                    row[f"{name}_vs_diffusers"] = row[name]["images_per_second"] / row["diffusers"]["images_per_second"]
        results[f"{sampler}-{steps}"] = row
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "model": args.pretrained or args.model,
        "unet_parameters": sum(p.numel() for p in pipe.unet.parameters()),
        "resolution": pipe.sample_shape[1],
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "compile": None if args.no_compile else {"mode": args.compile_mode, "backend": args.compile_backend},
        "repeats": args.repeats,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ddpm-64", help="A model preset, with random weights.")
    parser.add_argument("--pretrained", default=None, help="A saved pipeline (folder or Hub id) instead of --model.")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", nargs="+", default=["ddim:50", "dpmpp_2m:20"], help="sampler:steps pairs.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed calls per variant, alternating.")
    parser.add_argument("--no_compile", action="store_true", help="Skip the compiled variants.")
    parser.add_argument("--compile_mode", default=None, help="Default: reduce-overhead (CUDA graphs) on CUDA.")
    parser.add_argument("--compile_backend", default="inductor")
    parser.add_argument("--allow_tf32", action="store_true")
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    args = parser.parse_args()

    from ddpm_hub import SAMPLERS

    for run in args.runs:
        sampler, _, steps = run.partition(":")
        if sampler not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            parser.error(f"--runs takes sampler:steps with a sampler of {', '.join(SAMPLERS)}, got {run!r}.")
    if args.dtype == "fp16" and args.device == "cpu":
        parser.error("--dtype fp16 is not supported on the CPU; use fp32 or bf16.")
    results = measure(args)
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
