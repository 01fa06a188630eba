"""`ddpm-hub prepare SRC OUT`: write WebDataset shards for `--train_shards` from an image folder, a `datasets` data
set or a built-in set.

    ddpm-hub prepare shapes data/shapes --resolution 32 --shard_size 128
    ddpm-hub prepare ./photos data/photos --resolution 64
    train_unconditional.py --train_shards "data/photos/train-{000000..000009}.tar" --max_train_steps 1000

Each sample is `KEY.png` (8-bit RGB or L, converted as for training: alpha on white, 16-bit rescaled, CMYK, EXIF
orientation) and, when the source has labels, `KEY.cls` (the class id). Images are resized and cropped to
`--resolution` (or kept as they are with `--resolution 0`), so workers only decode. Every shard is written to a
temporary file and renamed, and the progress is recorded after each one: an interrupted prepare leaves no partial
shard, and running the same command again resumes after the last finished shard. `manifest.json` (written last)
holds the counts, resolution, source, label names and each shard's sha256.

With `--vae_name_or_path`, each sample also holds the latents of the image and of its left-right flip (the latent
cache's encoding, in batches on the accelerator if there is one), and the manifest names the VAE: `--train_shards`
then trains a latent model without encoding again (`ddpm_hub.latents.shards`, docs/latent.md).

    ddpm-hub prepare shapes data/shapes-latents --resolution 32 --vae_name_or_path stabilityai/sd-vae-ft-mse
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import sys
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import check_resolution
from .data.images import (
    TWEMOJI_SOURCE,
    find_image_column,
    images_that_fit,
    load_source,
    open_image,
    resize_and_crop,
    to_model_mode,
)
from .data.shards import MANIFEST_FORMAT, MANIFEST_NAME, file_sha256
from .files import WriteError, atomic_file, write_json, writing
from .run_folder import OutputFolder

logger = logging.getLogger(__name__)
PROGRESS_NAME = "prepare-progress.json"
RESUME_ADVICE = "the shards written so far are whole; free space and run the same command again to resume after them"
VAE_SETTINGS = ("vae_name_or_path", "vae_subfolder")  # in the settings only when given: pixel shards' stay as they are


@dataclass
class PrepareConfig:
    """`ddpm-hub prepare SRC OUT`: shards for `--train_shards`."""

    source: str = field(
        metadata={"help": "SRC: an image folder, a datasets data set (Hub id or local), or twemoji/shapes."}
    )
    output_dir: str = field(metadata={"help": "OUT: the folder the shards and manifest.json are written to."})
    resolution: int = field(
        default=64,
        metadata={"help": "Resize the shorter side and crop a square of this size; 0 keeps images as they are."},
    )
    center_crop: bool = field(default=False, metadata={"help": "Crop the centre instead of a seeded random square."})
    channels: int = field(default=3, metadata={"help": "3 (RGB) or 1 (grayscale)."})
    shard_size: int = field(
        default=1000, metadata={"help": "Images per shard (use at least processes x workers shards)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The data set's config, if it has several."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Column holding the images (default: image)."})
    class_column: str | None = field(
        default=None,
        metadata={"help": "Store this column's classes as .cls labels (default: the 'label' column, if any)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random crops."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where datasets are cached."})
    # --- latent shards: the latents of every image, stored beside it ---
    vae_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Also store each image's latents (and its left-right flip's) under this autoencoder "
            "(AutoencoderKL or VQModel, a folder or Hub id): --train_shards then trains a latent model on them, "
            "without encoding again and without --vae_name_or_path. Needs a --resolution. See docs/latent.md."
        },
    )
    vae_subfolder: str | None = field(
        default=None, metadata={"help": "The VAE's subfolder in --vae_name_or_path (vae in a Stable Diffusion repo)."}
    )
    device: str = field(
        default="auto",
        metadata={"help": "Where the VAE encodes: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."},
    )

    def validate(self) -> None:
        if self.resolution < 0:
            raise ValueError(f"--resolution must be 0 (keep) or positive, got {self.resolution}.")
        check_resolution(self.resolution)
        if self.shard_size <= 0:
            raise ValueError(f"--shard_size must be positive, got {self.shard_size}.")
        if self.channels not in (1, 3):
            raise ValueError(f"--channels must be 1 or 3, got {self.channels}.")
        if self.vae_subfolder is not None and self.vae_name_or_path is None:
            raise ValueError("--vae_subfolder needs --vae_name_or_path.")
        if self.vae_name_or_path is not None and not self.resolution:
            raise ValueError("--vae_name_or_path needs images of one size: pass --resolution (not 0).")


def _open_source(config: PrepareConfig):
    """`(dataset, image column, label names or None, description)` of SRC."""
    from .labels import LABEL_COLUMN, attach_labels

    is_folder = Path(config.source).is_dir() and not (Path(config.source) / "state.json").is_file()
    is_folder = is_folder and not (Path(config.source) / "dataset_dict.json").is_file()
    dataset, description = load_source(
        None if is_folder else config.source,
        config.dataset_config_name,
        config.source if is_folder else None,
        config.cache_dir,
    )
    column = find_image_column(dataset, config.image_column)
    label_names = None
    if config.class_column is not None or LABEL_COLUMN in dataset.column_names:
        dataset, label_names = attach_labels(
            dataset, class_column=config.class_column, image_column=column, twemoji=description == TWEMOJI_SOURCE
        )
    import datasets

    if isinstance(dataset.features[column], datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset, column, label_names, description


def _png(config: PrepareConfig, entry, index: int) -> tuple[bytes, np.ndarray]:
    """The PNG of one sample and its uint8 (C, H, W) pixels (what the VAE encodes: the PNG decodes to the same)."""
    image = to_model_mode(open_image(entry), config.channels)
    if config.resolution:
        image = resize_and_crop(
            image, config.resolution, config.center_crop, np.random.default_rng([config.seed, index])
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    array = np.asarray(image, dtype=np.uint8)
    return buffer.getvalue(), array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _readable(config: PrepareConfig, entries, start: int) -> tuple[list[tuple[int, bytes, np.ndarray]], int]:
    """`(index, PNG, pixels)` of each readable image of `entries` (images `start, start + 1, ...`), and the number
    of unreadable ones, skipped."""
    samples, skipped = [], 0
    for offset, entry in enumerate(entries):
        try:
            samples.append((start + offset, *_png(config, entry, start + offset)))
        except MemoryError:  # not the file's fault: the resolution or --shard_size is too large for this machine
            raise
        except Exception as error:  # noqa: BLE001 (unreadable files are skipped and counted, never fatal)
            logger.warning(
                "Skipping unreadable image %s: %s",
                entry.get("path") if isinstance(entry, dict) else start + offset,
                error,
            )
            skipped += 1
    return samples, skipped


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644  # reproducible shards: same input, same sha256
    tar.addfile(info, io.BytesIO(payload))


def write_shard(
    config: PrepareConfig, dataset, column: str, labelled: bool, start: int, path: Path, encoder=None
) -> dict:
    """Write images `start ... start + shard_size` of `dataset` to the tar `path` atomically; its manifest entry.

    `encoder` (`(vae, device)`, for latent shards) adds each sample's `KEY.latents.safetensors`, encoded in batches.
    """
    from .labels import LABEL_COLUMN

    rows = dataset[start : start + config.shard_size]
    samples, skipped = _readable(config, rows[column], start)
    latents = None
    if encoder is not None and samples:  # before the tar is opened: non-finite latents leave no shard
        from .latents.shards import LATENTS_MEMBER, sample_latents_payloads

        vae, device = encoder
        latents = sample_latents_payloads(vae, torch.from_numpy(np.stack([s[2] for s in samples])), device)
    with atomic_file(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for number, (index, png, _) in enumerate(samples):
                _add(tar, f"{index:09d}.png", png)
                if labelled:
                    _add(tar, f"{index:09d}.cls", str(int(rows[LABEL_COLUMN][index - start])).encode())
                if latents is not None:
                    _add(tar, f"{index:09d}.{LATENTS_MEMBER}", latents[number])  # KEY.latents.safetensors
        digest, size = hashlib.sha256(tmp.read_bytes()).hexdigest(), tmp.stat().st_size
    return {"name": path.name, "num_images": len(samples), "num_skipped": skipped, "sha256": digest, "size": size}


def _open_encoder(config: PrepareConfig) -> tuple[tuple | None, dict | None]:
    """`((vae, device), the manifest's latents record)` for `--vae_name_or_path`, checked before the source is
    read; `(None, None)` without it."""
    if config.vae_name_or_path is None:
        return None, None
    from .devices import resolve_device
    from .latents import load_vae, read_vae_info
    from .latents.shards import latents_record

    info = read_vae_info(config.vae_name_or_path, config.vae_subfolder, cache_dir=config.cache_dir)
    channels = info.config.get("in_channels", 3)
    if channels != config.channels:
        raise ValueError(f"--channels {config.channels}, but the VAE {info.name} encodes {channels}-channel images.")
    info.latent_size(config.resolution)  # the resolution divides by the VAE's factor
    device = resolve_device(config.device)
    vae = load_vae(info, config.cache_dir)
    record = latents_record(info, vae, config.resolution)
    shape = "x".join(map(str, record["latent_shape"]))
    logger.info(
        "Storing the latents of the %s %s (%s per image and flip), encoded on %s.",
        info.class_name,
        info.name,
        shape,
        device,
    )
    return (vae, device), record


def prepare(config: PrepareConfig) -> dict:
    """Write the shards and manifest of `config` and return the manifest.

    Resumes an interrupted run with the same settings (with latents: the same VAE, by fingerprint); a shard written
    earlier is kept only while its sha256 is still the one recorded, so that a shard damaged since is written again.
    """
    out = Path(config.output_dir)
    check_output_folder(config)
    settings = {
        key: value
        for key, value in asdict(config).items()
        if key not in ("output_dir", "cache_dir", "device") and not (key in VAE_SETTINGS and value is None)
    }
    encoder, latents = _open_encoder(config)
    if latents is not None:
        settings["vae_fingerprint"] = latents["vae_fingerprint"]
    finished, recorded = _recorded_shards(out, settings)
    intact = {entry["name"]: entry for entry in recorded if _intact(out / entry["name"], entry)}
    if finished is not None and len(intact) == len(recorded):
        logger.info("%s already holds these shards (manifest.json, every sha256 checked); nothing to do.", out)
        return finished
    dataset, column, label_names, description = _open_source(config)
    if len(dataset) == 0:
        raise ValueError(f"The source {config.source!r} is empty.")
    if config.resolution:
        what = f"--resolution {config.resolution}"
        fitting = images_that_fit(config.shard_size, config.channels, config.resolution, what)
        if fitting < min(config.shard_size, len(dataset)):
            raise ValueError(
                f"--shard_size {config.shard_size} images of {config.resolution} px do not fit in half the memory "
                f"available, which a shard is written from; use --shard_size {fitting} or less."
            )
    if intact:
        logger.info("Resuming: %d shards of %s were written already.", len(intact), out)
    progress_path = out / PROGRESS_NAME
    # Left by a killed writer (atomic_file's names for this command's own files): never a shard or a record.
    for pattern in (".train-*.tar.*.tmp", f".{PROGRESS_NAME}.*.tmp", f".{MANIFEST_NAME}.*.tmp"):
        for stale in out.glob(pattern):
            stale.unlink()
    num_shards = -(-len(dataset) // config.shard_size)
    width = max(6, len(str(num_shards - 1)))
    done: list[dict] = []
    for number in range(num_shards):
        path = out / f"train-{number:0{width}d}.tar"
        if path.name in intact:
            done.append(intact[path.name])
            continue
        start = number * config.shard_size
        with writing(path.name, out, advice=RESUME_ADVICE):
            done.append(write_shard(config, dataset, column, label_names is not None, start, path, encoder))
            write_json(progress_path, {"settings": settings, "shards": done})
        logger.info("Wrote %s (%d images).", path, done[-1]["num_images"])
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": description,
        "resolution": config.resolution or None,
        "channels": config.channels,
        "num_images": sum(entry["num_images"] for entry in done),
        "num_skipped": sum(entry["num_skipped"] for entry in done),
        "label_names": label_names,
        **({"latents": latents} if latents is not None else {}),
        "settings": settings,
        "shards": done,
    }
    with writing(MANIFEST_NAME, out, advice=RESUME_ADVICE):
        write_json(out / MANIFEST_NAME, manifest)
    progress_path.unlink(missing_ok=True)
    return manifest


def _recorded_shards(out: Path, settings: dict) -> tuple[dict | None, list[dict]]:
    """`(the finished manifest or None, the shards recorded as written)` of an earlier prepare into `out` with these
    settings (its manifest, else its progress file); another prepare's manifest is refused."""
    manifest = _read_json(out / MANIFEST_NAME)
    if manifest is not None:
        if manifest.get("settings") != settings:
            raise ValueError(
                f"{out} already holds shards made with other settings ({MANIFEST_NAME}); choose another OUT."
            )
        return manifest, list(manifest["shards"])
    progress = _read_json(out / PROGRESS_NAME)
    if progress is not None and progress.get("settings") == settings:
        return None, list(progress["shards"])
    return None, []


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _intact(path: Path, entry: dict) -> bool:
    """Whether a shard written earlier is still what was recorded (its size, then its sha256); a warning if not."""
    if not path.is_file():
        return False
    size = path.stat().st_size
    if ("size" in entry and size != entry["size"]) or file_sha256(path) != entry["sha256"]:
        logger.warning("%s changed since it was written (its sha256 differs): writing it again.", path)
        return False
    return True


def is_shard_set(folder: Path) -> bool:
    """Whether `folder` holds a shard set written by `ddpm-hub prepare` (finished or interrupted)."""
    return any(
        (data := _read_json(folder / name)) is not None and "settings" in data and "shards" in data
        for name in (MANIFEST_NAME, PROGRESS_NAME)
    )


_PREPARE_NAMES = re.compile(r"^(train-\d+\.tar|manifest\.json|prepare-progress\.json|\..*\.tmp)$")
SHARD_SET = OutputFolder(
    flag="OUT",
    holds="a shard set written by ddpm-hub prepare",
    is_own=is_shard_set,
    writes=lambda name: bool(_PREPARE_NAMES.match(name)),
)


def check_output_folder(config: PrepareConfig) -> None:
    """OUT is new, empty, or an earlier prepare's shard set, can be written, and is not SRC or inside it (the shards
    would become part of the source); a `ValueError` in one sentence otherwise."""
    out, source = Path(config.output_dir).resolve(), Path(config.source)
    if source.is_dir() and (out == source.resolve() or out.is_relative_to(source.resolve())):
        where = "SRC itself" if out == source.resolve() else "inside SRC"
        raise ValueError(
            f"OUT {config.output_dir!r} is {where} ({config.source!r}): the shards would be written among the images "
            "they are made from; choose a new or empty folder elsewhere."
        )
    SHARD_SET.check(config.output_dir)


def main(argv: list[str] | None = None) -> int:
    from .arguments import one_line, parse_config

    argv = list(sys.argv[1:] if argv is None else argv)
    positional = [arg for arg in argv[:2] if not arg.startswith("-")]
    if len(positional) == 2:  # `prepare SRC OUT` as well as `prepare --source SRC --output_dir OUT`
        argv = ["--source", argv[0], "--output_dir", argv[1], *argv[2:]]
    (config,) = parse_config([PrepareConfig], argv, prog="ddpm-hub prepare", description=__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = prepare(config)
    except ValueError as error:
        print(f"ddpm-hub prepare: error: {one_line(error)}", file=sys.stderr)
        return 2
    except WriteError as error:
        print(f"ddpm-hub prepare: error: {one_line(error)}", file=sys.stderr)
        return 1
    except MemoryError:  # not an unreadable image: the shards written so far are whole, and the same command resumes
        print(
            "ddpm-hub prepare: error: out of memory while decoding; lower --resolution or --shard_size (the shards "
            "written so far are kept: the same command resumes after them).",
            file=sys.stderr,
        )
        return 1
    latents = manifest.get("latents")
    with_latents = f", with their latents under the VAE {latents['vae_name_or_path']}" if latents else ""
    print(
        f"{manifest['num_images']} images in {len(manifest['shards'])} shards of {config.output_dir}{with_latents} "
        f"({manifest['num_skipped']} unreadable files skipped)."
    )
    return 0
