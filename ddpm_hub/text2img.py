# Copyright 2026 The ddpm-hub authors. Licensed under the Apache License, Version 2.0.
"""Stable Diffusion text-to-image from a prompt: the `text2img.py` command line and the `Text2Image` API.

Any diffusers text-to-image checkpoint that `AutoPipelineForText2Image` can load works (Stable Diffusion 1.x and
2.x, SDXL), by Hub id or local folder. Every image is saved as a PNG whose text chunks, and a JSON sidecar beside
it, hold everything needed to regenerate exactly that image: prompt, negative prompt, seed, steps, guidance,
sampler, size, model, revision and dtype.

The same loaded components also edit images (diffusers' own pipelines, built from the loaded one with
`from_pipe`, so no weight is loaded twice): `--init_image` with `--strength` redraws an image from a prompt
(SDEdit, Meng et al. 2021), and `--mask_image` with it redraws only the mask's white region (inpainting). The
metadata then also records the init image and mask, by absolute path and sha256 of the file, and the strength.

Seeds: with `--seed S`, image k of a run (counting from 0 across all prompts) gets seed S + k; without `--seed`,
S is drawn at random and recorded all the same. Each image draws its noise from its own CPU `torch.Generator`, so
regenerating one image alone with its recorded seed gives the same pixels as in the batch it came from.

Example:

```sh
python text2img.py --prompt "a cat wearing a hat" --seed 0 --num_images_per_prompt 4 --grid
python text2img.py --prompts_file prompts.txt --scheduler dpmpp_2m --num_inference_steps 25 --dtype fp16
python text2img.py --from_metadata outputs/20260101-120000-002-2-a-cat-wearing-a-hat.json
python text2img.py --prompt "a cat wearing a hat, oil painting" --init_image photo.png --strength 0.6 --seed 0
python text2img.py --prompt "a red hat" --init_image photo.png --mask_image hat-mask.png --seed 0
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import logging
import math
import os
import re
import secrets
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import torch

from .arguments import one_line, parse_config
from .devices import resolve_device
from .files import WriteError, atomic_file, writing
from .input_checks import METADATA_MAX_BYTES, PNG_METADATA_MAX_BYTES, check_small_regular_file
from .pipeline_ddpm_hub import SAMPLERS, compile_denoiser, scheduler_from_name
from .safe_loading import check_local_model, weights_kwargs
from .sampling import grid_shape

logger = logging.getLogger(__name__)

# The checkpoint the product's design material uses; any diffusers text-to-image checkpoint works.
DEFAULT_MODEL = "stabilityai/stable-diffusion-2"

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# `Literal` over the shared sampler table, so `--scheduler` lists exactly the names the rest of ddpm-hub accepts.
SchedulerName = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]

# What `Text2Image.generate` does: from text alone, from an init image, or inside a mask of an init image.
MODES = ("text2img", "img2img", "inpaint")

# Hub ids are "org/name"; anything else must be an existing local folder.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ----------------------------------------------------------------------------------------------------------------
# Checks shared by the command line (at parse time, before any model loads) and the Python API.
# ----------------------------------------------------------------------------------------------------------------


def check_model_reference(model: str) -> None:
    """Raise `ValueError` unless `model` is an existing local path or looks like a Hub id ("org/name")."""
    if not model or not model.strip():
        raise ValueError("The model must be a Hub id like 'org/name' or a local folder, got an empty string.")
    if Path(model).expanduser().exists() or _HUB_ID.match(model):
        return
    raise ValueError(f"Model {model!r} is neither an existing local folder nor a Hub id like 'org/name'.")


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """Map "auto" to fp16 on CUDA and fp32 elsewhere; refuse fp16 on the CPU."""
    if dtype == "auto":
        # Half precision halves memory and roughly doubles speed on GPUs; CPUs and MPS are safest in fp32.
        return "fp16" if device.type == "cuda" else "fp32"
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of: auto, {', '.join(DTYPES)}.")
    if dtype == "fp16" and device.type == "cpu":
        # Many CPU kernels have no float16 version, and those that do are slow; bf16 is the CPU's half type.
        raise ValueError("dtype fp16 is not supported on the CPU; use --dtype fp32 or bf16, or a GPU (--device cuda).")
    return dtype


def read_image_file(path: str | os.PathLike, what: str):
    """Open the image file at `path` as RGB (EXIF orientation applied) with the sha256 of its bytes.

    The bytes are read once, so the hash recorded is the hash of the pixels used. Raises `ValueError` naming
    `what` ("init image", "mask image") and the path when the file is missing or not an image.
    """
    import PIL.Image
    from diffusers.utils import load_image

    path = Path(path)
    if not path.exists():
        raise ValueError(f"The {what} {str(path)!r} does not exist.")
    if not path.is_file():
        raise ValueError(f"The {what} {str(path)!r} is a folder, not an image file.")
    data = path.read_bytes()
    try:
        # load_image: diffusers' own loader (EXIF transpose, then RGB), which also decodes every pixel now.
        image = load_image(PIL.Image.open(io.BytesIO(data)))
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"The {what} {str(path)!r} is not an image ({error}).") from None
    return image, hashlib.sha256(data).hexdigest()


def input_image(image, what: str):
    """(RGB image, absolute path or `None`, sha256 of the file or `None`) for a path or an in-memory PIL image."""
    import PIL.Image

    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB"), None, None
    if isinstance(image, (str, os.PathLike)):
        pixels, sha256 = read_image_file(image, what)
        return pixels, str(Path(image).resolve()), sha256
    raise ValueError(f"The {what} must be a file path or a PIL image, got {type(image).__name__}.")


def check_generation_inputs(
    prompts: Sequence[str],
    *,
    negative_prompt: str | None,
    num_inference_steps: int,
    guidance_scale: float,
    height: int | None,
    width: int | None,
    num_images_per_prompt: int,
    seed: int | None,
    image=None,
    strength: float | None = None,
    mask_image=None,
) -> None:
    """Raise `ValueError` with a sentence naming the first bad value among the arguments of `Text2Image.generate`.

    An init image and a mask given as paths are opened here (not the model), so that a missing file, a file that
    is not an image, or a mask of another size than the image is refused before anything heavy loads.
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError("Give at least one prompt (--prompt or --prompts_file).")
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"Prompts must be non-empty text, got {prompt!r}.")
    if negative_prompt is not None and guidance_scale <= 1:
        # diffusers silently ignores the negative prompt without classifier-free guidance.
        raise ValueError(
            f"A negative prompt only acts with classifier-free guidance; guidance_scale is {guidance_scale}, "
            "it must be above 1."
        )
    for name, value in (("num_inference_steps", num_inference_steps), ("num_images_per_prompt", num_images_per_prompt)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}.")
    for name, value in (("height", height), ("width", width)):
        if value is not None and (not isinstance(value, int) or value < 8 or value % 8):
            raise ValueError(f"{name} must be a positive multiple of 8 (the VAE's downsampling), got {value!r}.")
    if seed is not None and (not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}.")
    check_edit_inputs(image, strength, mask_image, num_inference_steps=num_inference_steps, height=height, width=width)


def _round_down_to_8(size: int, name: str) -> int:
    """An init image's side rounded down to a multiple of 8, as diffusers does, with a warning if it moved."""
    rounded = size - size % 8
    if rounded != size:
        logger.warning("The init image's %s of %d pixels is not a multiple of 8; using %d.", name, size, rounded)
    return rounded


def check_edit_inputs(
    image, strength: float | None, mask_image, *, num_inference_steps: int, height: int | None, width: int | None
) -> None:
    """The image-to-image and inpainting part of `check_generation_inputs`."""
    if image is None:
        if mask_image is not None:
            raise ValueError("A mask (--mask_image, mask_image=) needs the image to inpaint (--init_image, image=).")
        if strength is not None:
            raise ValueError(
                f"strength ({strength}) only applies to an init image (--init_image, image=); none was given."
            )
        return
    if strength is not None:
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            # 0 would return the init image untouched; above 1 there is no noisier step to start from.
            raise ValueError(f"strength must be in (0, 1], got {strength!r}.")
        # diffusers runs int(num_inference_steps * strength) of the steps; none at all is an error deep inside it.
        if int(num_inference_steps * strength) < 1:
            raise ValueError(
                f"strength {strength} x num_inference_steps {num_inference_steps} leaves no denoising step "
                "(diffusers runs int(steps x strength)); raise strength or num_inference_steps."
            )
    init, _, _ = input_image(image, "init image")
    if (height is None and init.height < 8) or (width is None and init.width < 8):
        raise ValueError(
            f"The init image is {init.width}x{init.height} pixels; without --height and --width (height=, width=) "
            "its sides must be at least 8."
        )
    if mask_image is not None:
        mask, _, _ = input_image(mask_image, "mask image")
        if mask.size != init.size:
            name = f" {str(mask_image)!r}" if isinstance(mask_image, (str, os.PathLike)) else ""
            raise ValueError(
                f"The mask image{name} is {mask.width}x{mask.height} but the init image is "
                f"{init.width}x{init.height} (width x height); they must be the same size."
            )


# ----------------------------------------------------------------------------------------------------------------
# Metadata: what is written into each PNG and its JSON sidecar.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ImageMetadata:
    """Everything needed to regenerate one image, as saved in its PNG text chunks and JSON sidecar.

    `generate_kwargs()` and `from_pretrained_kwargs()` give the arguments of [`Text2Image.generate`] and
    [`Text2Image.from_pretrained`] that reproduce the image (on the same device type and library versions).

    Args:
        prompt (`str`): the prompt, in full (the model may have read only its first tokens).
        negative_prompt (`str`, *optional*): the negative prompt.
        seed (`int`): seed of the CPU `torch.Generator` that drew this image's noise.
        num_inference_steps (`int`), guidance_scale (`float`), height (`int`), width (`int`): as passed to the pipeline.
        scheduler (`str`, *optional*): short sampler name (see `SAMPLERS`); `None` means the model's own scheduler.
        scheduler_class (`str`): the diffusers scheduler class that ran.
        model (`str`), revision (`str`, *optional*), variant (`str`, *optional*): what was loaded.
        dtype (`str`): fp32, fp16 or bf16.
        device (`str`): where it ran (informational: GPU and CPU kernels give slightly different pixels).
        pipeline_class (`str`): the diffusers pipeline class that ran.
        safety_checker (`bool`): whether the model's safety checker ran.
        nsfw_content_detected (`bool`, *optional*): the safety checker's verdict (a flagged image is blacked out);
            `None` when no safety checker ran.
        index (`int`): position of the image in its run; `seed` is the run's first seed plus `index`.
        created (`str`): when the run started (ISO 8601, local time).
        ddpm_hub_version (`str`), diffusers_version (`str`), torch_version (`str`): library versions.
        mode (`str`, defaults to `"text2img"`): "text2img", "img2img" (from an init image) or "inpaint".
        init_image (`str`, *optional*), init_image_sha256 (`str`, *optional*): the init image's absolute path and
            the sha256 of its file; the path is `None` when it was given as an in-memory image.
        strength (`float`, *optional*): how much of the init image was redrawn, in (0, 1].
        mask_image (`str`, *optional*), mask_image_sha256 (`str`, *optional*): the same for the inpainting mask.
    """

    prompt: str
    negative_prompt: str | None
    seed: int
    num_inference_steps: int
    guidance_scale: float
    height: int
    width: int
    scheduler: str | None
    scheduler_class: str
    model: str
    revision: str | None
    variant: str | None
    dtype: str
    device: str
    pipeline_class: str
    safety_checker: bool
    nsfw_content_detected: bool | None
    index: int
    created: str
    ddpm_hub_version: str
    diffusers_version: str
    torch_version: str
    # Added with image editing; sidecars written before it lack them and read as text-to-image.
    mode: str = "text2img"
    init_image: str | None = None
    init_image_sha256: str | None = None
    strength: float | None = None
    mask_image: str | None = None
    mask_image_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def generate_kwargs(self) -> dict[str, Any]:
        """Arguments of [`Text2Image.generate`] that regenerate this image alone.

        For an edited image they name the init image (and mask) by their recorded paths, after checking that the
        files are still there and unchanged (see `check_sources`).
        """
        kwargs = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
            "num_images_per_prompt": 1,
            "seed": self.seed,
        }
        if self.mode != "text2img":
            self.check_sources()
            kwargs.update(image=self.init_image, strength=self.strength)
            if self.mode == "inpaint":
                kwargs["mask_image"] = self.mask_image
        return kwargs

    def check_sources(self) -> None:
        """Raise `ValueError` unless the init image and mask this image was made from are still at their recorded
        paths with the same content (sha256 of the file); a different file would give a different image."""
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r} in the metadata; expected one of: {', '.join(MODES)}.")
        sources = {"text2img": [], "img2img": ["init_image"], "inpaint": ["init_image", "mask_image"]}[self.mode]
        for name in sources:
            path, recorded = getattr(self, name), getattr(self, f"{name}_sha256")
            what = name.replace("_", " ")
            if path is None:
                raise ValueError(
                    f"This {self.mode} image was made from an in-memory {what}, which its metadata cannot bring back; "
                    f"pass the same image again as {'image' if name == 'init_image' else name}=."
                )
            _, sha256 = read_image_file(path, what)
            if sha256 != recorded:
                raise ValueError(
                    f"The {what} {path!r} has changed since this image was made (sha256 {recorded} recorded, "
                    f"{sha256} now); restore it to regenerate the image."
                )

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Arguments of [`Text2Image.from_pretrained`] that load the model as it was."""
        return {
            "model": self.model,
            "revision": self.revision,
            "variant": self.variant,
            "scheduler": self.scheduler,
            "dtype": self.dtype,
        }

    def png_text(self) -> dict[str, str]:
        """One PNG text chunk per field: text fields as they are, the others as JSON; `None` fields are left out."""
        return {
            name: value if name in _TEXT_FIELDS else json.dumps(value)
            for name, value in self.to_dict().items()
            if value is not None
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "metadata") -> "ImageMetadata":
        names = list(_METADATA_TYPES)
        missing = [name for name in names if name not in data and name not in _OPTIONAL_FIELDS | _DEFAULT_FIELDS]
        if missing:
            raise ValueError(f"{source} lacks the field(s) {', '.join(missing)}; is it a text2img.py sidecar?")
        return cls(**{name: data.get(name) for name in names if name in data or name not in _DEFAULT_FIELDS})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ImageMetadata":
        """Read the metadata of an image from its JSON sidecar or from the PNG itself."""
        path = Path(path)
        check_small_regular_file(path, "Metadata file", PNG_METADATA_MAX_BYTES if path.suffix.lower() == ".png" else METADATA_MAX_BYTES)
        if not path.is_file():
            raise ValueError(f"Metadata file {str(path)!r} does not exist.")
        if path.suffix.lower() == ".png":
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as image:
                    text = dict(image.text)
                data = {
                    name: value if name in _TEXT_FIELDS else json.loads(value)
                    for name, value in text.items()
                    if name in _METADATA_TYPES
                }
            except (UnidentifiedImageError, json.JSONDecodeError) as error:
                raise ValueError(f"Cannot read text2img.py metadata from {str(path)!r} ({error}).") from None
            return cls.from_dict(data, source=str(path))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"Metadata file {str(path)!r} is not valid JSON ({error}).") from None
        if not isinstance(data, dict):
            raise ValueError(f"Metadata file {str(path)!r} does not hold a JSON object.")
        return cls.from_dict(data, source=str(path))


_METADATA_TYPES = typing.get_type_hints(ImageMetadata)
# Text fields go into PNG chunks as they are; the others as JSON (numbers, booleans).
_TEXT_FIELDS = {name for name, hint in _METADATA_TYPES.items() if hint in (str, str | None)}
_OPTIONAL_FIELDS = {name for name, hint in _METADATA_TYPES.items() if type(None) in typing.get_args(hint)}
_DEFAULT_FIELDS = {f.name for f in dataclasses.fields(ImageMetadata) if f.default is not dataclasses.MISSING}


# ----------------------------------------------------------------------------------------------------------------
# Output: images plus metadata, saved so that runs never overwrite each other.
# ----------------------------------------------------------------------------------------------------------------


def _slug(text: str, max_length: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_length].rstrip("-")
    return slug or "image"


def _write_new(directory: Path, stem: str, writers: dict[str, Any]) -> dict[str, Path]:
    """Write one file per suffix in `writers` under a stem no existing file uses, each created exclusively.

    `writers[suffix](tmp_path)` writes the file's content; if another run already holds a name, the stem gets a
    numbered suffix ("-1", "-2", ...) instead of replacing anything.
    """
    for attempt in range(10_000):
        name = stem if attempt == 0 else f"{stem}-{attempt}"
        written: dict[str, Path] = {}
        try:
            for suffix, write in writers.items():
                path = directory / f"{name}{suffix}"
                with atomic_file(path, overwrite=False) as tmp:
                    write(tmp)
                written[suffix] = path
            return written
        except FileExistsError:
            # Only files this call created are removed; the name is someone else's, try the next one.
            for path in written.values():
                path.unlink(missing_ok=True)
    raise FileExistsError(f"No free file name for {stem!r} in {directory}.")


def _png_writer(image, text: dict[str, str]):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)  # falls back to an iTXt chunk for text outside latin-1
    return lambda tmp: image.save(tmp, format="PNG", pnginfo=info)


def _json_writer(data: dict[str, Any]):
    return lambda tmp: tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass
class Text2ImageOutput:
    """Output of [`Text2Image.generate`].

    Args:
        images (`list[PIL.Image.Image]`): the images, prompt after prompt, `num_images_per_prompt` each.
        metadata (`list[ImageMetadata]`): one entry per image, in the same order.
        num_images_per_prompt (`int`): how many consecutive images share a prompt (used for grids).
    """

    images: list
    metadata: list[ImageMetadata]
    num_images_per_prompt: int = 1

    def save(self, output_dir: str | os.PathLike, *, grid: bool = False) -> list[Path]:
        """Save each image as `{timestamp}-{index:03d}-{seed}-{prompt slug}.png` with a `.json` sidecar.

        Files are created exclusively and atomically: a name already taken gets a "-1", "-2", ... suffix, and an
        interrupted save leaves no partial file under a final name.

        Args:
            output_dir (`str` or `os.PathLike`): the folder, created if needed.
            grid (`bool`, defaults to `False`): also save one grid image per prompt, `{timestamp}-grid-...png`.

        Returns:
            `list[Path]`: the files written, in order.

        Raises `WriteError` (one line: where and why) when the folder cannot be written; no partial file is left.
        """
        output_dir = Path(output_dir)
        with writing("images", output_dir):
            return self._save(output_dir, grid)

    def _save(self, output_dir: Path, grid: bool) -> list[Path]:
        output_dir.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        image_paths: list[Path] = []
        for image, meta in zip(self.images, self.metadata):
            stem = f"{_timestamp(meta)}-{meta.index:03d}-{meta.seed}-{_slug(meta.prompt)}"
            written = _write_new(
                output_dir, stem, {".png": _png_writer(image, meta.png_text()), ".json": _json_writer(meta.to_dict())}
            )
            image_paths.append(written[".png"])
            paths += [written[".png"], written[".json"]]
        if grid:
            for start in range(0, len(self.images), self.num_images_per_prompt):
                cells = slice(start, start + self.num_images_per_prompt)
                paths.append(self._save_grid(output_dir, self.images[cells], self.metadata[cells], image_paths[cells]))
        return paths

    @staticmethod
    def _save_grid(output_dir: Path, images: list, metadata: list[ImageMetadata], image_paths: list[Path]) -> Path:
        from diffusers.utils import make_image_grid

        first = metadata[0]
        text = {k: v for k, v in first.png_text().items() if k not in ("seed", "index", "nsfw_content_detected")}
        text["seeds"] = json.dumps([meta.seed for meta in metadata])
        text["images"] = json.dumps([path.name for path in image_paths])
        rows, cols = grid_shape(len(images))
        stem = f"{_timestamp(first)}-grid-{first.index:03d}-{_slug(first.prompt)}"
        return _write_new(output_dir, stem, {".png": _png_writer(make_image_grid(images, rows, cols), text)})[".png"]


def _timestamp(meta: ImageMetadata) -> str:
    return datetime.fromisoformat(meta.created).strftime("%Y%m%d-%H%M%S")


# ----------------------------------------------------------------------------------------------------------------
# The API.
# ----------------------------------------------------------------------------------------------------------------


class Text2Image:
    r"""
    Text-to-image generation with a diffusers Stable Diffusion (1.x, 2.x) or SDXL pipeline, recording how every
    image was made.

    Args:
        pipeline ([`~diffusers.DiffusionPipeline`]):
            A loaded text-to-image pipeline with `tokenizer`, `unet` and `scheduler` components.
        model (`str`):
            The Hub id or local path it came from, recorded in the metadata.
        revision (`str`, *optional*), variant (`str`, *optional*):
            Recorded in the metadata.
        scheduler (`str`, *optional*):
            Short name of the sampler in use (see `SAMPLERS`); `None` when it is the model's own scheduler.

    Example:

    ```py
    >>> from ddpm_hub.text2img import Text2Image

    >>> t2i = Text2Image.from_pretrained("stabilityai/stable-diffusion-2", dtype="fp16", scheduler="dpmpp_2m")
    >>> output = t2i.generate("a cat wearing a hat", num_images_per_prompt=4, seed=0, num_inference_steps=25)
    >>> output.save("outputs", grid=True)
    >>> # Image 2 alone, with the seed recorded for it (0 + 2):
    >>> again = t2i.generate(**output.metadata[2].generate_kwargs()).images[0]
    >>> # The same loaded weights redraw an image (img2img), or only the white part of a mask (inpainting):
    >>> painted = t2i.generate("an oil painting of a cat", image="cat.png", strength=0.6, seed=0)
    >>> hatted = t2i.generate("a red hat", image="cat.png", mask_image="hat-mask.png", seed=0)
    ```
    """

    def __init__(
        self,
        pipeline,
        *,
        model: str,
        revision: str | None = None,
        variant: str | None = None,
        scheduler: str | None = None,
    ):
        self.pipeline = pipeline
        # diffusers' img2img and inpaint pipelines over the same component objects, built on first use.
        self._edit_pipelines: dict[str, Any] = {}
        self.model = model
        self.revision = revision
        self.variant = variant
        self.scheduler = scheduler

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        variant: str | None = None,
        scheduler: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        attention_slicing: bool = False,
        cpu_offload: bool = False,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        compile: bool = False,
        disable_safety_checker: bool = False,
    ) -> "Text2Image":
        r"""
        Load a text-to-image pipeline with `AutoPipelineForText2Image.from_pretrained`.

        Args:
            model (`str`, defaults to `"stabilityai/stable-diffusion-2"`):
                A Hub id ("org/name") or a local folder saved with `save_pretrained`.
            revision (`str`, *optional*):
                Branch, tag or commit of a Hub model.
            variant (`str`, *optional*):
                Weight file variant, e.g. `"fp16"` for half-size downloads.
            scheduler (`str`, *optional*):
                Sampler to swap in by short name (a key of `SAMPLERS`: ddim, pndm, euler, euler_a, dpmpp_2m, ...),
                built with `from_config` so it keeps the model's noise schedule. Defaults to the model's own.
            dtype (`str`, defaults to `"auto"`):
                `"fp32"`, `"fp16"`, `"bf16"`, or `"auto"` (fp16 on CUDA, fp32 elsewhere). fp16 is refused on the CPU.
            device (`str`, defaults to `"auto"`):
                `"auto"` (cuda, then mps, then cpu), `"cpu"`, `"cuda"`, `"cuda:N"` or `"mps"`.
            attention_slicing (`bool`, defaults to `False`):
                Compute attention in slices: less memory, a little slower.
            cpu_offload (`bool`, defaults to `False`):
                Keep each model on the CPU until it runs (`enable_model_cpu_offload`); needs CUDA.
            vae_slicing (`bool`, defaults to `False`):
                Decode the images of a batch one at a time.
            vae_tiling (`bool`, defaults to `False`):
                Decode large images tile by tile.
            compile (`bool`, defaults to `False`):
                `torch.compile` the UNet, in place, for the batch shape in use (CUDA graphs, "reduce-overhead", on
                CUDA): the first images of each batch size are slow (compilation), the rest faster.
            disable_safety_checker (`bool`, defaults to `False`):
                Load without the model's safety checker (for models that have one).

        Raises:
            `ValueError`: for an invalid argument, or a model diffusers cannot use for text-to-image.
            `OSError`: when the model cannot be found or downloaded.
        """
        from diffusers import AutoPipelineForText2Image

        check_model_reference(model)
        check_local_model(model)  # safetensors only (unless opted in), a model_index.json that is an object
        if scheduler is not None and scheduler not in SAMPLERS:
            raise ValueError(f"Unknown scheduler {scheduler!r}; choose one of: {', '.join(SAMPLERS)}.")
        torch_device = resolve_device(device)
        dtype = resolve_dtype(dtype, torch_device)
        if cpu_offload and torch_device.type != "cuda":
            raise ValueError(f"cpu_offload moves models to and from a CUDA GPU, but the device is {torch_device}.")

        try:
            index = AutoPipelineForText2Image.load_config(model, revision=revision)
            load_kwargs: dict[str, Any] = {"revision": revision, "variant": variant, "dtype": DTYPES[dtype], **weights_kwargs()}
            if disable_safety_checker and (index.get("safety_checker") or [None])[0] is not None:
                load_kwargs.update(safety_checker=None, requires_safety_checker=False)
            pipeline = AutoPipelineForText2Image.from_pretrained(model, **load_kwargs)
        except OSError as error:
            if Path(model).expanduser().exists():
                raise OSError(f"Cannot load the local folder {model!r}: {error}") from error
            hint = "check the id, the revision and the network"
            raise OSError(f"Cannot load {model!r} from the Hub ({hint}): {error}") from error
        except ValueError as error:
            raise ValueError(f"Cannot load model {model!r} as a text-to-image pipeline: {error}") from error

        if scheduler is not None:
            pipeline.scheduler = scheduler_from_name(scheduler, pipeline.scheduler.config)
        if cpu_offload:
            pipeline.enable_model_cpu_offload(device=torch_device)
        else:
            pipeline.to(torch_device)
        if attention_slicing:
            pipeline.enable_attention_slicing()
        # diffusers 0.42 moved VAE slicing and tiling from the pipeline to the VAE itself.
        if vae_slicing:
            pipeline.vae.enable_slicing()
        if vae_tiling:
            pipeline.vae.enable_tiling()
        if compile:
            # In place, for the batch shape in use; CUDA graphs on CUDA, except under offload, which moves the weights.
            compile_denoiser(pipeline.unet, None if not cpu_offload else "default")
        # A local folder is recorded by its absolute path, so that its metadata works from any working directory.
        local = Path(model).expanduser()
        model = str(local.resolve()) if local.exists() else model
        return cls(pipeline, model=model, revision=revision, variant=variant, scheduler=scheduler)

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) the model was trained at, used when `generate` is given none."""
        sample_size = self.pipeline.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        return height * self.pipeline.vae_scale_factor, width * self.pipeline.vae_scale_factor

    def pipeline_for(self, mode: str):
        r"""
        The diffusers pipeline that runs `mode` ("text2img", "img2img" or "inpaint") on the loaded components.

        The image-to-image and inpainting pipelines are built once, with `AutoPipelineFor{Image2Image,Inpainting}
        .from_pipe`, from the same module objects (UNet, VAE, text encoders, scheduler, safety checker): no weight
        is loaded or copied again, and the memory options, compiled UNet and sampler apply to every mode.
        Stable Diffusion 1.x/2.x give `StableDiffusion{Img2Img,Inpaint}Pipeline`, SDXL the `StableDiffusionXL` ones.
        """
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; choose one of: {', '.join(MODES)}.")
        if mode == "text2img":
            return self.pipeline
        if mode not in self._edit_pipelines:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForImage2Image if mode == "img2img" else AutoPipelineForInpainting
            try:
                self._edit_pipelines[mode] = auto.from_pipe(self.pipeline)
            except ValueError as error:
                raise ValueError(
                    f"diffusers has no {mode} pipeline for {type(self.pipeline).__name__} ({one_line(error)})."
                ) from None
        return self._edit_pipelines[mode]

    def default_strength(self, mode: str) -> float | None:
        """diffusers' default strength for `mode` with this model (SD: 0.8 img2img, 1.0 inpaint; SDXL: 0.3, 0.9999)."""
        if mode == "text2img":
            return None
        return inspect.signature(type(self.pipeline_for(mode)).__call__).parameters["strength"].default

    def check_inputs(
        self,
        prompt: str | list[str],
        *,
        negative_prompt: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        seed: int | None = None,
        image=None,
        strength: float | None = None,
        mask_image=None,
    ) -> list[str]:
        """Check the arguments of [`~Text2Image.generate`] without generating; return the prompts as a list.

        Raises `ValueError` naming the first bad value.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if image is not None and strength is None:
            strength = self.default_strength("inpaint" if mask_image is not None else "img2img")
        check_generation_inputs(
            prompts,
            negative_prompt=negative_prompt,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            num_images_per_prompt=num_images_per_prompt,
            seed=seed,
            image=image,
            strength=strength,
            mask_image=mask_image,
        )
        num_train_timesteps = self.pipeline.scheduler.config.num_train_timesteps
        if num_inference_steps > num_train_timesteps:
            raise ValueError(
                f"num_inference_steps ({num_inference_steps}) cannot exceed the model's "
                f"{num_train_timesteps} training timesteps."
            )
        return prompts

    def _warn_if_truncated(self, prompt: str) -> None:
        """Log a warning naming how many tokens of `prompt` the text encoder will not see."""
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        if tokenizer is None:
            return
        num_tokens = len(tokenizer(prompt, truncation=False, verbose=False).input_ids)
        dropped = num_tokens - tokenizer.model_max_length
        if dropped > 0:
            logger.warning(
                "Prompt %r is %d tokens long but the text encoder reads at most %d; the last %d tokens were dropped.",
                prompt if len(prompt) <= 60 else prompt[:57] + "...",
                num_tokens,
                tokenizer.model_max_length,
                dropped,
            )

    @torch.no_grad()
    def generate(
        self,
        prompt: str | list[str],
        *,
        negative_prompt: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        seed: int | None = None,
        image=None,
        strength: float | None = None,
        mask_image=None,
        progress: bool = True,
    ) -> Text2ImageOutput:
        r"""
        Generate `num_images_per_prompt` images for each prompt: from text alone, or by redrawing `image`.

        Args:
            prompt (`str` or `list[str]`):
                The prompt or prompts. Text beyond the tokenizer's limit (77 tokens for SD) is dropped, with a warning.
            negative_prompt (`str`, *optional*):
                What the images should not show, for every prompt; needs `guidance_scale > 1`.
            num_inference_steps (`int`, defaults to 50):
                Denoising steps; with an init image diffusers runs only the last `int(num_inference_steps * strength)`.
            guidance_scale (`float`, defaults to 7.5):
                Classifier-free guidance weight (Ho & Salimans 2022); 1 or less turns guidance off.
            height (`int`, *optional*), width (`int`, *optional*):
                Image size in pixels, multiples of 8. Default to the init image's size rounded down to multiples of
                8, or without one to the model's training size (`default_size`). An init image and mask of
                another size are resized to it.
            num_images_per_prompt (`int`, defaults to 1):
                Images per prompt.
            seed (`int`, *optional*):
                Image k (counted from 0 over all prompts) gets seed `seed + k`; drawn at random when not given.
            image (`str`, `os.PathLike` or `PIL.Image.Image`, *optional*):
                Init image for image to image (SDEdit, Meng et al. 2021): it is encoded, noised to the step that
                `strength` names and denoised under the prompt. A path is recorded in the metadata with the sha256
                of the file, so that the image can be regenerated; an in-memory image cannot be.
            strength (`float`, *optional*):
                How much of the init image to redraw, in (0, 1]: 1 starts from pure noise. Defaults to diffusers'
                default for the pipeline (`default_strength`: SD 0.8 for img2img and 1.0 for inpainting).
            mask_image (`str`, `os.PathLike` or `PIL.Image.Image`, *optional*):
                With `image`, inpaint: redraw where the mask is white, keep where it is black. Same size as `image`.
            progress (`bool`, defaults to `True`):
                Show a progress bar over the denoising steps.

        Returns:
            [`Text2ImageOutput`]: the images and one [`ImageMetadata`] per image.
        """
        mode = "text2img" if image is None else "img2img" if mask_image is None else "inpaint"
        if image is not None and strength is None:
            strength = self.default_strength(mode)
        prompts = self.check_inputs(
            prompt,
            negative_prompt=negative_prompt,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            num_images_per_prompt=num_images_per_prompt,
            seed=seed,
            image=image,
            strength=strength,
            mask_image=mask_image,
        )
        for text in dict.fromkeys(prompts + ([negative_prompt] if negative_prompt else [])):
            self._warn_if_truncated(text)

        pipeline = self.pipeline_for(mode)
        sources: dict[str, Any] = {}
        if image is None:
            default_height, default_width = self.default_size
            height, width = height or default_height, width or default_width
        else:
            init, sources["init_image"], sources["init_image_sha256"] = input_image(image, "init image")
            height = height or _round_down_to_8(init.height, "height")
            width = width or _round_down_to_8(init.width, "width")
            # Resized here rather than inside diffusers, whose img2img pipelines take no size argument.
            init = pipeline.image_processor.resize(init, height, width)
            if mask_image is not None:
                mask, sources["mask_image"], sources["mask_image_sha256"] = input_image(mask_image, "mask image")
                mask = pipeline.mask_processor.resize(mask, height, width)
        if seed is None:
            seed = secrets.randbelow(2**32)
        created = datetime.now().isoformat(timespec="seconds")
        run_info = self._run_info(pipeline)

        images, metadata = [], []
        for prompt_index, text in enumerate(prompts):
            first = prompt_index * num_images_per_prompt
            seeds = [seed + first + i for i in range(num_images_per_prompt)]
            # One CPU generator per image: its noise then depends on its seed only, not on its place in the batch
            # or on the device, so any image can be regenerated alone.
            generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
            pipeline.set_progress_bar_config(desc=f"prompt {prompt_index + 1}/{len(prompts)}", disable=not progress)
            call_kwargs: dict[str, Any] = {"height": height, "width": width}
            if mode != "text2img":
                # One copy of the init image (and mask) per image: diffusers' inpaint pipelines VAE-encode a single
                # image with the first generator only, which would tie image k's noise to its place in the batch.
                # With a copy each, generator k alone draws everything random about image k.
                call_kwargs = {"image": [init] * num_images_per_prompt, "strength": strength}
                if mode == "inpaint":
                    call_kwargs.update(mask_image=[mask] * num_images_per_prompt, height=height, width=width)
            output = pipeline(
                prompt=text,
                negative_prompt=negative_prompt,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                num_images_per_prompt=num_images_per_prompt,
                generator=generators,
                output_type="pil",
                **call_kwargs,
            )
            if pipeline is not self.pipeline:
                # Model CPU offload's hooks belong to the loaded pipeline: the edit pipeline cannot put the models
                # back on the CPU after its call, so the owner does (a no-op without offload).
                self.pipeline.maybe_free_model_hooks()
            nsfw = getattr(output, "nsfw_content_detected", None)
            for i, picture in enumerate(output.images):
                images.append(picture)
                metadata.append(
                    ImageMetadata(
                        prompt=text,
                        negative_prompt=negative_prompt,
                        seed=seeds[i],
                        num_inference_steps=num_inference_steps,
                        guidance_scale=float(guidance_scale),
                        height=height,
                        width=width,
                        nsfw_content_detected=None if nsfw is None else bool(nsfw[i]),
                        index=first + i,
                        created=created,
                        mode=mode,
                        strength=None if strength is None else float(strength),
                        **sources,
                        **run_info,
                    )
                )
        return Text2ImageOutput(images=images, metadata=metadata, num_images_per_prompt=num_images_per_prompt)

    def _run_info(self, pipeline) -> dict[str, Any]:
        """The metadata fields shared by every image of a run made with `pipeline`."""
        import diffusers

        from . import __version__

        unet_dtype = self.pipeline.unet.dtype
        return {
            "scheduler": self.scheduler,
            "scheduler_class": type(self.pipeline.scheduler).__name__,
            "model": self.model,
            "revision": self.revision,
            "variant": self.variant,
            "dtype": next((name for name, dtype in DTYPES.items() if dtype == unet_dtype), str(unet_dtype)),
            "device": str(pipeline._execution_device),
            "pipeline_class": type(pipeline).__name__,
            "safety_checker": getattr(pipeline, "safety_checker", None) is not None,
            "ddpm_hub_version": __version__,
            "diffusers_version": diffusers.__version__,
            "torch_version": torch.__version__,
        }


# ----------------------------------------------------------------------------------------------------------------
# The command line: three typed configs, parsed and validated before anything loads.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class GenerationConfig:
    """What to generate."""

    prompt: list[str] = field(
        default_factory=list,
        metadata={
            "action": "extend",
            "help": 'Prompt(s); repeatable (--prompt "a cat" --prompt "a dog"). Quote prompts that contain spaces.',
        },
    )
    prompts_file: str | None = field(
        default=None,
        metadata={"help": "Text file with one prompt per line (blank lines are skipped); added after any --prompt."},
    )
    negative_prompt: str | None = field(default=None, metadata={"help": "What the images should not show."})
    num_inference_steps: int = field(default=50, metadata={"help": "Denoising steps."})
    guidance_scale: float = field(default=7.5, metadata={"help": "Classifier-free guidance weight; <= 1 is off."})
    height: int | None = field(default=None, metadata={"help": "Image height, a multiple of 8; model's default."})
    width: int | None = field(default=None, metadata={"help": "Image width, a multiple of 8; model's default."})
    num_images_per_prompt: int = field(default=1, metadata={"help": "Images per prompt."})
    seed: int | None = field(
        default=None, metadata={"help": "Image k of the run gets seed + k (random when not given)."}
    )
    init_image: str | None = field(
        default=None,
        metadata={"help": "Image to start from (image to image): it is noised to --strength and redrawn under "
                          "the prompt. The output has its size (rounded down to multiples of 8) unless --height "
                          "and --width are given."},
    )
    strength: float | None = field(
        default=None,
        metadata={"help": "With --init_image: how much to redraw, in (0, 1]; 1 starts from pure noise. Defaults "
                          "to diffusers' default (SD: 0.8, or 1.0 with --mask_image; SDXL: 0.3, or 0.9999)."},
    )
    mask_image: str | None = field(
        default=None,
        metadata={"help": "With --init_image: inpaint, redrawing where this mask is white and keeping where it is "
                          "black. Same size as the init image."},
    )
    from_metadata: str | None = field(
        default=None,
        metadata={"help": "Regenerate the image described by this .json sidecar (or .png); takes its prompt, "
                          "settings, model, scheduler and dtype, so those flags cannot be given with it. An init "
                          "image and mask must still be at their recorded paths, unchanged."},
    )

    def prompts(self) -> list[str]:
        """The prompts of `--prompt`, then those of `--prompts_file`."""
        prompts = list(self.prompt)
        if self.prompts_file is not None:
            path = Path(self.prompts_file)
            if not path.is_file():
                raise ValueError(f"Prompts file {self.prompts_file!r} does not exist.")
            lines = path.read_text(encoding="utf-8").splitlines()
            from_file = [line.strip() for line in lines if line.strip()]
            if not from_file:
                raise ValueError(f"Prompts file {self.prompts_file!r} holds no prompt.")
            prompts += from_file
        return prompts

    def generate_kwargs(self) -> dict[str, Any]:
        return {
            "prompt": self.prompts(),
            "negative_prompt": self.negative_prompt,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
            "num_images_per_prompt": self.num_images_per_prompt,
            "seed": self.seed,
            "image": self.init_image,
            "strength": self.strength,
            "mask_image": self.mask_image,
        }

    def validate(self) -> None:
        if self.from_metadata is not None:
            settings = [f.name for f in dataclasses.fields(self) if f.name != "from_metadata"]
            given = _non_default_flags(self, only=settings)
            if given:
                raise ValueError(f"--from_metadata takes the prompt and settings from the file; drop {given}.")
            ImageMetadata.load(self.from_metadata).generate_kwargs()  # also checks an init image and mask
            return
        kwargs = self.generate_kwargs()
        check_generation_inputs(kwargs.pop("prompt"), **kwargs)


@dataclass
class ModelConfig:
    """Which model to load, and how to run it."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Hub id (org/name) or local pipeline folder."})
    revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a Hub model."})
    variant: str | None = field(default=None, metadata={"help": "Weights variant, e.g. fp16."})
    scheduler: SchedulerName | None = field(  # type: ignore[valid-type]
        default=None, metadata={"help": "Sampler to swap in (from_config); defaults to the model's own."}
    )
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = field(
        default="auto", metadata={"help": "auto: fp16 on CUDA, fp32 elsewhere. fp16 is refused on the CPU."}
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps."})
    attention_slicing: bool = field(default=False, metadata={"help": "Sliced attention: less memory, slower."})
    cpu_offload: bool = field(default=False, metadata={"help": "Model CPU offload (needs CUDA)."})
    vae_slicing: bool = field(default=False, metadata={"help": "Decode a batch one image at a time."})
    vae_tiling: bool = field(default=False, metadata={"help": "Decode large images tile by tile."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the UNet."})
    disable_safety_checker: bool = field(
        default=False, metadata={"help": "Load without the model's safety checker (on by default where it exists)."}
    )

    def validate(self) -> None:
        check_model_reference(self.model)
        device = resolve_device(self.device)
        resolve_dtype(self.dtype, device)
        if self.cpu_offload and device.type != "cuda":
            raise ValueError(f"--cpu_offload needs a CUDA device, but the device is {device}.")


@dataclass
class OutputConfig:
    """Where the images go."""

    output_dir: str = field(default="outputs", metadata={"help": "Folder for the PNGs and their JSON sidecars."})
    grid: bool = field(default=False, metadata={"help": "Also save one grid image per prompt."})

    def validate(self) -> None:
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ValueError(f"--output_dir {self.output_dir!r} exists and is not a folder.")


def _non_default_flags(config, only: Sequence[str]) -> str:
    """Those of the `--flags` named in `only` whose values in `config` differ from their defaults ("" if none)."""
    changed = []
    for f in dataclasses.fields(config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name in only and getattr(config, f.name) != default:
            changed.append(f"--{f.name}")
    return ", ".join(changed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `text2img.py` command line; returns the exit status (2 for bad input)."""
    prog = "text2img.py"
    generation, model_config, output = parse_config(
        (GenerationConfig, ModelConfig, OutputConfig),
        argv,
        prog=prog,
        description="Generate images from text prompts with a Stable Diffusion (1.x, 2.x, SDXL) pipeline, from text "
        "alone, from an init image (--init_image --strength) or inside a mask (--mask_image).",
    )
    model_kwargs = dataclasses.asdict(model_config)
    try:
        if generation.from_metadata is not None:
            # The sidecar fixes what shapes the pixels; how to run (device, memory options) stays the user's.
            given = _non_default_flags(model_config, only=("model", "revision", "variant", "scheduler", "dtype"))
            if given:
                raise ValueError(f"--from_metadata takes the model, scheduler and dtype from the file; drop {given}.")
            metadata = ImageMetadata.load(generation.from_metadata)
            model_kwargs.update(metadata.from_pretrained_kwargs())
            generate_kwargs = metadata.generate_kwargs()
        else:
            generate_kwargs = generation.generate_kwargs()
        text2image = Text2Image.from_pretrained(**model_kwargs)
        text2image.check_inputs(**generate_kwargs)
    except (ValueError, OSError) as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2

    result = text2image.generate(**generate_kwargs)
    try:
        paths = result.save(output.output_dir, grid=output.grid)
    except WriteError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    flagged = [meta.index for meta in result.metadata if meta.nsfw_content_detected]
    if flagged:
        logger.warning("The safety checker blacked out image(s) %s.", ", ".join(map(str, flagged)))
    return 0
