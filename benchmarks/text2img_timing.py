"""Time text to image, the CLIP score and the 4x upscale, per image: the figures of docs/text-to-image.md.

    OMP_NUM_THREADS=1 python benchmarks/text2img_timing.py            # tiny random models (tests/tiny_sd.py), CPU
    python benchmarks/text2img_timing.py --model stabilityai/stable-diffusion-2-base --size 128 --steps 25 \\
        --clip_model openai/clip-vit-base-patch16 --upscaler_model stabilityai/stable-diffusion-x4-upscaler

Each figure is the median of `--repeats` timed calls after one untimed warm-up call, one image per call: generation
at `--size` px with `--steps` DDIM steps, the CLIP score of that image, and its 4x upscale with `--upscale_steps`
steps. Prints a Markdown table with the machine and the torch thread count.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_models(folder: Path) -> dict[str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_sd import build_tiny_clip, build_tiny_sd, build_tiny_upscaler

    for name, build in (("sd", build_tiny_sd), ("clip", build_tiny_clip), ("upscaler", build_tiny_upscaler)):
        build(folder / name)
    return {name: str(folder / name) for name in ("sd", "clip", "upscaler")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Text-to-image model (default: a tiny random one).")
    parser.add_argument("--clip_model", help="CLIP model (default: a tiny random one).")
    parser.add_argument("--upscaler_model", help="x4 upscaler (default: a tiny random one).")
    parser.add_argument("--size", type=int, default=32, help="Generated side in px (upscaled to 4x).")
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 20], help="Generation steps to time.")
    parser.add_argument("--upscale_steps", type=int, nargs="+", default=[2, 20], help="Upscaler steps to time.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from ddpm_hub.text2img import Text2Image

    with tempfile.TemporaryDirectory() as folder:
        tiny = tiny_models(Path(folder)) if not (args.model and args.clip_model and args.upscaler_model) else {}
        model = args.model or tiny["sd"]
        t2i = Text2Image.from_pretrained(model, scheduler="ddim", device=args.device)
        clip_model, upscaler_model = args.clip_model or tiny["clip"], args.upscaler_model or tiny["upscaler"]
        t2i.load_clip_scorer(clip_model)
        t2i.load_upscaler(upscaler_model)
        size = dict(height=args.size, width=args.size)
        rows = []
        for steps in args.steps:
            seconds = median_seconds(
                lambda steps=steps: t2i.generate("a cat", seed=0, num_inference_steps=steps, progress=False, **size),
                args.repeats,
            )
            rows.append((f"generate {args.size}x{args.size} px, DDIM {steps} steps", seconds))
        output = t2i.generate("a cat", seed=0, num_inference_steps=args.steps[0], progress=False, **size)
        rows.append(("CLIP score of one image", median_seconds(lambda: t2i.clip_score(output, clip_model=clip_model),
                                                                args.repeats)))  # fmt: skip
        for steps in args.upscale_steps:
            seconds = median_seconds(
                lambda steps=steps: t2i.upscale(output.images, metadata=output.metadata, num_inference_steps=steps,
                                    upscaler_model=upscaler_model, progress=False),
                args.repeats,
            )  # fmt: skip
            rows.append((f"upscale {args.size} -> {4 * args.size} px, {steps} steps", seconds))
    import torch

    device = output.metadata[0].device
    print(f"{platform.machine()} {device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.1f}; "
          f"model {model}\n")  # fmt: skip
    print(f"| step | seconds (median of {args.repeats}) |\n| --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
