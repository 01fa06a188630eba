"""Encode-once throughput of the latent cache (issue 16): images/s through a VAE's encoder, and cache size.

    python benchmarks/latent_encoding.py --resolution 256 --num_images 256 --repeats 3

Runs `ddpm_hub.latents.cached_latents` (the code a latent training run uses) on seeded random images with a tiny
random f8 `AutoencoderKL` (four encoder blocks of 8-32 channels, 4 latent channels), with and without flips, each
into a fresh cache folder; reports the median images/s over repeats (flipped views counted as images encoded) and
the cache file's size scaled to 1000 images. `--vae` times a real autoencoder folder instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ddpm_hub.latents import cached_latents, load_vae, read_vae_info

TINY_F8 = {
    "block_out_channels": (8, 16, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "latent_channels": 4,
}

SD_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vae", default=None, help="An autoencoder folder (default: the tiny random f8 VAE).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--save_sd_vae", default=None, help="Only save a random VAE of Stable Diffusion's architecture to this folder."
    )
    args = parser.parse_args()
    if args.save_sd_vae:
        # SD's VAE layout (stabilityai/sd-vae-ft-mse): same compute, random weights, for offline throughput runs.
        AutoencoderKL(**SD_VAE).save_pretrained(args.save_sd_vae)
        return
    with tempfile.TemporaryDirectory() as scratch:
        vae_dir = args.vae
        if vae_dir is None:
            torch.manual_seed(0)
            vae_dir = str(Path(scratch) / "vae")
            AutoencoderKL(**TINY_F8).save_pretrained(vae_dir)
        vae = load_vae(read_vae_info(vae_dir))
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randint(
            0, 256, (args.num_images, 3, args.resolution, args.resolution), dtype=torch.uint8, generator=generator
        )
        results = {}
        for flips in (False, True):
            rates, size = [], 0
            for repeat in range(args.repeats):
                root = Path(scratch) / f"cache-{flips}-{repeat}"
                start = time.perf_counter()
                _, path, _ = cached_latents(
                    pixels, vae, cache_root=root, resolution=args.resolution, center_crop=True, random_flip=flips,
                    device=args.device,
                )  # fmt: skip
                rates.append(args.num_images * (2 if flips else 1) / (time.perf_counter() - start))
                size = path.stat().st_size
            results["with flips" if flips else "no flips"] = {
                "images_per_second": round(statistics.median(rates), 1),
                "runs": [round(r, 1) for r in rates],
                "cache_mb_per_1000_images": round(size / args.num_images * 1000 / 2**20, 2),
            }
    print(
        json.dumps(
            {"resolution": args.resolution, "num_images": args.num_images, "device": args.device, **results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
