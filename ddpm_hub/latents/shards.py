"""Latent shards: `ddpm-hub prepare SRC OUT --vae_name_or_path VAE` stores each image's latents in the shards, and
`--train_shards OUT` trains a latent model on them, streamed, without running the encoder again.

This is how large latent-diffusion runs keep the encoder off the training path (precomputed latents in
WebDataset shards). A sample of a latent shard holds

- `KEY.png`: the resized and cropped image, as in pixel shards (FID references, `ddpm-hub eval --reference` and
  `ddpm-hub explore --data` read it);
- `KEY.cls`: its class id, when the source has labels;
- `KEY.latents.safetensors`: the latent cache's encoding of that image (`encode_latents`, the same code), in the
  cache's format: `mean` of shape (F, C, h, w) and, for an `AutoencoderKL`, the posterior's `std`, float16, with
  F = 2 views (index 1: the latents of the left-right flipped image, so that `--random_flip` keeps working).

Why safetensors rather than `.npy`: datasets' `webdataset` builder decodes a `.npy` member into Arrow nested lists
(one Python float per value when read); a member it does not know stays bytes, which the DataLoader worker reads
with `safetensors.torch.load` (no pickle, no copy through Python lists).

The manifest's `latents` record names the VAE (its name or absolute path, subfolder, class and
`vae_fingerprint`, the hash of its config and weights that the latent cache keys itself by), its scaling factor,
the latents' shape, dtype, moments and views. Training takes the VAE from there (`--vae_name_or_path` is implied;
when given, it must be the same VAE, by fingerprint) and refuses a mismatch in one line before any data is read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..data.shards import ShardSet
from .cache import STORAGE_DTYPE, LatentStats, encode_latents, stack_moments
from .vae import VAEInfo, vae_fingerprint

LATENTS_MEMBER = "latents.safetensors"  # the member's extension after the key: `000000123.latents.safetensors`
SHARD_VIEWS = ("image", "flipped")  # every latent shard holds both: --random_flip is a training-time choice


def sample_latents_payloads(vae: torch.nn.Module, pixels: torch.Tensor, device: torch.device | str) -> list[bytes]:
    """The `KEY.latents.safetensors` members of uint8 (N, C, H, W) images: encoded in batches on `device`."""
    from safetensors.torch import save

    stats = encode_latents(vae, pixels, random_flip=True, device=device, disable_progress=True)
    if not all(torch.isfinite(t).all() for t in (stats.mean, stats.std) if t is not None):
        raise ValueError(f"The VAE {type(vae).__name__} gave non-finite latents; the shard was not written.")
    payloads = []
    for index in range(len(stats)):
        tensors = {"mean": stats.mean[index].contiguous()}
        if stats.std is not None:
            tensors["std"] = stats.std[index].contiguous()
        payloads.append(save(tensors))
    return payloads


def read_sample_latents(payload: bytes) -> torch.Tensor:
    """One sample's statistics (F, M, C, h, w), as `LatentImages` batches them (`stack_moments`)."""
    from safetensors.torch import load

    tensors = load(payload)
    std = tensors.get("std")
    return stack_moments(LatentStats(tensors["mean"][None], None if std is None else std[None]))[0]


def latents_record(info: VAEInfo, vae: torch.nn.Module, resolution: int) -> dict[str, Any]:
    """The manifest's `latents` record for shards of `resolution` px images encoded by `vae`."""
    source = str(Path(info.source).resolve()) if Path(info.source).is_dir() else info.source
    return {
        "vae_name_or_path": source,
        "vae_subfolder": info.subfolder,
        "vae_class": info.class_name,
        "vae_fingerprint": vae_fingerprint(vae),
        "scaling_factor": info.scaling_factor,
        "latent_shape": list(info.sample_shape(resolution)),
        "dtype": str(STORAGE_DTYPE).removeprefix("torch."),
        "moments": ["mean", "std"] if info.is_kl else ["latent"],
        "views": list(SHARD_VIEWS),
        "member": LATENTS_MEMBER,
    }


def latent_shards_manifest(shards: ShardSet | None) -> dict[str, Any] | None:
    """The manifest of resolved `--train_shards` when they are latent shards, else `None` (no shards, pixel shards
    or no manifest)."""
    manifest = shards.manifest if shards is not None else None
    return manifest if manifest is not None and manifest.get("latents") else None


NEEDS_LATENT_SHARDS = (
    "write latent shards with `ddpm-hub prepare SRC OUT --resolution R --vae_name_or_path {vae}` and train on "
    "them with --train_shards OUT (the encoder does not run during training)"
)


def plan_latent_shards(manifest: dict[str, Any] | None, model_config, data_config):
    """The model config of a latent run on `--train_shards`: the shards' VAE and image resolution filled in.

    Raises `ValueError` in one sentence when the data are streamed but not latent shards, or when `--resolution`
    differs from the shards'. The VAE itself is compared by `check_shards_vae` once it is loaded.
    """
    if manifest is None:
        what = "--dataset_name --streaming" if data_config.streaming else "--train_shards without latents"
        raise ValueError(
            f"--vae_name_or_path with {what}: {NEEDS_LATENT_SHARDS.format(vae=model_config.vae_name_or_path)}."
        )
    record, resolution = manifest["latents"], manifest["resolution"]
    if model_config.resolution is not None and model_config.resolution != resolution:
        raise ValueError(
            f"--resolution {model_config.resolution} differs from the latent shards' {resolution} px images; leave "
            "it out (it follows the shards) or write the shards again at that resolution."
        )
    if model_config.vae_name_or_path is None:  # implied: the shards' own VAE
        model_config = dataclasses.replace(
            model_config, vae_name_or_path=record["vae_name_or_path"], vae_subfolder=record["vae_subfolder"]
        )
    return dataclasses.replace(model_config, resolution=resolution)


class VAEMismatchError(ValueError):
    """A VAE that is not the one latent shards were encoded with."""


def check_shards_vae(
    manifest: dict[str, Any], info: VAEInfo, vae: torch.nn.Module | None, implied: bool = False
) -> None:
    """Refuse in one line a VAE other than the shards' (cheaply by its config first; by fingerprint once `vae`, its
    loaded weights, is given). `implied`: the VAE is the one the manifest names (no `--vae_name_or_path` given), so a
    mismatch means it changed at its place since the shards were written."""
    record = manifest["latents"]
    expected = f"the VAE the shards were encoded with ({record['vae_class']} {record['vae_name_or_path']}"
    expected += f"/{record['vae_subfolder']})" if record["vae_subfolder"] else ")"
    if implied:
        subject = f"the VAE at {info.name}, named by the shards' manifest.json,"
        expected = "the one they were encoded with: it changed since `ddpm-hub prepare` ran"
        advice = "restore that VAE, pass --vae_name_or_path with a copy of it, or write the shards again"
    else:
        subject = f"--vae_name_or_path {info.name}"
        advice = "leave --vae_name_or_path out to use theirs, or write the shards again with this VAE"
    shape = list(info.sample_shape(manifest["resolution"]))
    if info.class_name != record["vae_class"] or shape != record["latent_shape"]:
        raise VAEMismatchError(
            f"{subject} is not {expected}: a {info.class_name} with {shape} latents, theirs are "
            f"{record['latent_shape']}; {advice}."
        )
    if vae is not None and vae_fingerprint(vae) != record["vae_fingerprint"]:
        raise VAEMismatchError(
            f"{subject} is not {expected}: its weights or config differ (fingerprint {vae_fingerprint(vae)[:12]}, "
            f"theirs {record['vae_fingerprint'][:12]}); {advice}."
        )
