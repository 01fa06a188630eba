"""Classifier guidance at several scales: how often a separate clean classifier sees the target class, and FID.

    python benchmarks/classifier_guidance.py --make_shapes data/shapes3 --num_images 3000 --resolution 16
    python benchmarks/classifier_guidance.py shapes-ddpm --classifier shapes-classifier --data data/shapes3 \\
        --scales 0 1 2 4 8 16 --num_samples 300 --output guidance.json

For every scale s, `--num_samples` images are sampled from MODEL (`--sampler`, `--num_inference_steps`, image i
from seed i) guided by CLASSIFIER towards the classes in turn (image i towards class i mod K), as ADM's class-
balanced guided samples (Dhariwal & Nichol 2021, Sec. 4-5). They are scored by:

- **target share**: the fraction that a *clean* classifier, trained here on the labelled images of `--data` at
  t = 0 only (a `NoiseAwareClassifier` of its own, never the guiding one; its accuracy on a held-out fifth of the
  images is reported beside it), assigns to the class they were guided towards; chance is 1 / K;
- **FID** against all images of `--data`, with `--features` (EfficientNet-Lite0 by default, offline).

`--make_shapes DIR` writes the small synthetic labelled set these figures use on a CPU: one filled disc, square or
triangle per image on a flat background, random colours, sizes and places, one class sub-folder per kind.
One JSON object is printed (and written to `--output`).

With `--exact_denoiser`, MODEL's UNet is replaced by the exact denoiser of the images of `--data` (the posterior
mean of x_0 over the data set, in closed form: what a perfectly trained model of those images predicts), so that
the figures measure the guidance and the classifiers, not a UNet's training; MODEL then only gives the schedule
and the image size (`--make_schedule_model DIR` saves such a pipeline: a random tiny UNet, DDPM's linear schedule).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

SHAPES = ("disc", "square", "triangle")


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> PIL.Image.Image:
    """One filled shape of `kind` on a flat background, with random colours, size and place."""
    background, colour = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2))
    image = PIL.Image.new("RGB", (size, size), background)
    draw = PIL.ImageDraw.Draw(image)
    r = rng.uniform(size / 4, size / 2.6)
    x, y = rng.uniform(r, size - r, 2)
    if kind == "disc":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
    else:
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    return image


def make_shapes(folder: Path, num_images: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        kind = SHAPES[index % len(SHAPES)]
        (folder / kind).mkdir(parents=True, exist_ok=True)
        draw_shape(kind, size, rng).save(folder / kind / f"{index:05d}.png")


class ExactDenoiser(ModelMixin, ConfigMixin):
    """The exact denoiser of a finite set of images (uint8, N x C x H x W): eps from E[x_0 | x_t] = sum_i w_i x_i,
    w = softmax_i(-|x_t - alpha x_i|^2 / 2 sigma^2), as a `UNet2DModel` stand-in for epsilon prediction."""

    @register_to_config
    def __init__(self, sample_size: int, in_channels: int, out_channels: int):
        super().__init__()

    @classmethod
    def of(cls, images: torch.Tensor, alphas_cumprod: torch.Tensor) -> ExactDenoiser:
        denoiser = cls(images.shape[-1], images.shape[1], images.shape[1])
        denoiser.register_buffer("data", images.float().flatten(1) / 127.5 - 1)
        denoiser.register_buffer("alphas_cumprod", alphas_cumprod.double())
        denoiser.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # a device and dtype
        return denoiser

    def forward(self, sample: torch.Tensor, timestep, class_labels=None):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        x = sample.double().flatten(1)
        t = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(len(x)).round().long()
        alpha_prod = self.alphas_cumprod[t].view(-1, 1)
        alpha, sigma = alpha_prod.sqrt(), (1 - alpha_prod).sqrt()
        data = self.data.double()
        distances = (x**2).sum(1, keepdim=True) - 2 * alpha * x @ data.T + alpha**2 * (data**2).sum(1)
        weights = torch.softmax(-distances / (2 * sigma**2), dim=1)
        eps = (x - alpha * (weights @ data)) / sigma
        return UNet2DOutput(sample=eps.view_as(sample).to(sample.dtype))


def train_clean_classifier(pipe, images, labels, names, steps: int, seed: int):
    """A classifier of clean images (t = 0 only), trained on four fifths of them; returns it and its accuracy on the
    other fifth."""
    from ddpm_hub.classifier import new_classifier

    torch.manual_seed(seed)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    held, kept = order[: len(order) // 5], order[len(order) // 5 :]
    clean = images.float() / 127.5 - 1
    channels, size = clean.shape[1], clean.shape[-1]
    classifier = new_classifier((channels, size, size), pipe.scheduler.config, names, width=16, layers_per_block=1)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)
    zero = torch.zeros(64, dtype=torch.long)
    for _ in range(steps):
        batch = kept[torch.randint(len(kept), (64,), generator=generator)]
        loss = torch.nn.functional.cross_entropy(classifier(clean[batch], zero).logits, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classifier.eval()
    return classifier, float((predict(classifier, images[held]) == labels[held]).float().mean())


def clean_classifier_for(pipe, pixels, data, args):
    """The clean classifier saved in `--clean_classifier` by an earlier run with the same data, else a new one."""
    from ddpm_hub.classifier import NoiseAwareClassifier

    folder = Path(args.clean_classifier) if args.clean_classifier else None
    if folder is not None and (folder / "accuracy.json").is_file():
        accuracy = json.loads((folder / "accuracy.json").read_text())["held_out_accuracy"]
        return NoiseAwareClassifier.from_pretrained(folder).eval(), accuracy
    print(f"Training the clean classifier ({args.clean_steps} steps)...", file=sys.stderr, flush=True)
    labels, names = data.labels, data.label_names
    classifier, accuracy = train_clean_classifier(pipe, pixels, labels, names, args.clean_steps, args.seed)
    if folder is not None:
        classifier.save_pretrained(folder)
        (folder / "accuracy.json").write_text(json.dumps({"held_out_accuracy": accuracy}) + "\n")
    return classifier, accuracy


@torch.no_grad()
def predict(classifier, images: torch.Tensor) -> torch.Tensor:
    """Class ids of uint8 images (N, C, H, W) by a clean classifier."""
    clean = images.float() / 127.5 - 1
    return torch.cat([classifier(batch, 0).logits.argmax(1) for batch in clean.split(256)])


def guided_samples(pipe, classifier, scale: float, num_samples: int, num_classes: int, args) -> tuple:
    """uint8 images (N, C, H, W) guided towards class i mod K, image i from seed i; and those targets."""
    targets = torch.arange(num_samples) % num_classes
    batches = []
    for start in range(0, num_samples, args.batch_size):
        ids = targets[start : start + args.batch_size]
        generators = [torch.Generator().manual_seed(args.seed + start + i) for i in range(len(ids))]
        images = pipe(
            batch_size=len(ids), class_labels=ids.tolist(), classifier=classifier, classifier_scale=scale,
            generator=generators, num_inference_steps=args.num_inference_steps, output_type="pt",
        ).images  # fmt: skip
        batches.append((images * 255).round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(batches), targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="The diffusion model (pipeline folder or Hub id).")
    parser.add_argument("--classifier", help="The noise-aware classifier guiding it (folder or Hub id).")
    parser.add_argument("--data", help="Labelled images (class sub-folders, or e.g. twemoji): clean classifier, FID.")
    parser.add_argument("--scales", type=float, nargs="+", default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--num_samples", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--num_inference_steps", type=int, default=25)
    parser.add_argument("--clean_steps", type=int, default=800, help="Training steps of the clean classifier.")
    parser.add_argument("--clean_classifier", default=None, help="Keep the clean classifier here (reused if there).")
    parser.add_argument("--features", default="efficientnet-lite0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    parser.add_argument("--make_shapes", default=None, metavar="DIR", help="Write the synthetic labelled set, exit.")
    parser.add_argument("--num_images", type=int, default=3000, help="With --make_shapes: images (a third per kind).")
    parser.add_argument("--resolution", type=int, default=16, help="With --make_shapes: their side in pixels.")
    parser.add_argument("--exact_denoiser", action="store_true", help="Guide the exact denoiser of --data (above).")
    parser.add_argument("--make_schedule_model", default=None, metavar="DIR", help="Save a schedule-only model, exit.")
    args = parser.parse_args(argv)
    if args.make_schedule_model:
        from diffusers import UNet2DModel

        from ddpm_hub import DDPMHubPipeline, make_noise_scheduler

        torch.manual_seed(args.seed)
        unet = UNet2DModel(sample_size=args.resolution, block_out_channels=(8, 16), layers_per_block=1,
                           down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                           norm_num_groups=8)  # fmt: skip
        DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler()).save_pretrained(args.make_schedule_model)
        print(f"Saved a {args.resolution} px schedule-only model to {args.make_schedule_model}")
        return 0
    if args.make_shapes:
        make_shapes(Path(args.make_shapes), args.num_images, args.resolution, args.seed)
        print(f"Wrote {args.num_images} images of {', '.join(SHAPES)} to {args.make_shapes}")
        return 0
    if not (args.model and args.classifier and args.data):
        parser.error("give MODEL, --classifier and --data (or --make_shapes DIR).")

    from ddpm_hub import DDPMHubPipeline
    from ddpm_hub.classifier import load_classifier
    from ddpm_hub.data import load_images
    from ddpm_hub.devices import resolve_device
    from ddpm_hub.evaluation.features import get_extractor
    from ddpm_hub.evaluation.metrics import fid

    device = resolve_device(args.device)
    pipe = DDPMHubPipeline.from_pretrained(args.model).to(device).set_sampler(args.sampler)
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier(args.classifier).to(device)
    channels, size, _ = pipe.image_shape
    where = {"train_data_dir": args.data} if Path(args.data).is_dir() else {"dataset_name": args.data}
    data = load_images(**where, resolution=size, channels=channels, class_conditional=True)
    if data.label_names != classifier.label_names:
        parser.error(f"--data has the classes {data.label_names}, the classifier {classifier.label_names}.")
    pixels = torch.as_tensor(np.asarray(data.pixels))
    if args.exact_denoiser:
        pipe = DDPMHubPipeline(unet=ExactDenoiser.of(pixels, pipe.scheduler.alphas_cumprod), scheduler=pipe.scheduler)
        pipe = pipe.to(device).set_sampler(args.sampler)
        pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    clean_classifier, clean_accuracy = clean_classifier_for(pipe, pixels, data, args)
    extractor = get_extractor(args.features, device)
    reference = extractor.extract(pixels, progress="reference features").features
    rows = []
    for scale in args.scales:
        start = time.perf_counter()
        images, targets = guided_samples(pipe, classifier, scale, args.num_samples, data.num_classes, args)
        share = float((predict(clean_classifier, images) == targets).float().mean())
        score = fid(extractor.extract(images).features, reference)
        rows.append({"scale": scale, "target_share": round(share, 4), "fid": round(score, 3),
                     "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {
        "model": f"exact denoiser of {args.data}" if args.exact_denoiser else args.model,
        "classifier": args.classifier, "data": args.data, "classes": data.label_names,
        "num_samples": args.num_samples, "sampler": args.sampler, "num_inference_steps": args.num_inference_steps,
        "features": args.features, "clean_classifier_accuracy": round(clean_accuracy, 4),
        "chance": round(1 / data.num_classes, 4), "device": str(device), "rows": rows,
        "total_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
