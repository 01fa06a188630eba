"""What is written beside every generated image, and how: `ImageMetadata` (the PNG text chunks and JSON sidecar
that regenerate the image) and `Text2ImageOutput.save` (files created exclusively and atomically, never replaced)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..files import atomic_file, writing
from ..input_checks import METADATA_MAX_BYTES, PNG_METADATA_MAX_BYTES, check_small_regular_file
from ..sampling import grid_shape
from .inputs import MODES, read_image_file

# The mode of an image given to `Text2Image.upscale`, not generated: its source is `init_image`.
UPSCALE_MODE = "upscale"


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
        clip_score (`float`, *optional*), clip_model (`str`, *optional*): the image's CLIP score against its prompt,
            max(100 · cos(E_image, E_prompt), 0), and the CLIP model that gave it (see `clip_score.py`).
        upscaler (`str`, *optional*): the upscaler (a `StableDiffusionUpscalePipeline`) that made the saved image 4x
            `width` x `height`, with the same prompt, negative prompt and seed; `None` when it was not upscaled.
        upscale_noise_level (`int`, *optional*), upscale_num_inference_steps (`int`, *optional*),
            upscale_guidance_scale (`float`, *optional*): the upscaler's settings.

    Mode "upscale" describes an image given to `Text2Image.upscale` (not generated): `init_image` is that image,
    `model` and the sampling fields are the upscaler's; it is upscaled again with `upscale_kwargs()`.
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
    clip_score: float | None = None
    clip_model: str | None = None
    upscaler: str | None = None
    upscale_noise_level: int | None = None
    upscale_num_inference_steps: int | None = None
    upscale_guidance_scale: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def generate_kwargs(self) -> dict[str, Any]:
        """Arguments of [`Text2Image.generate`] that regenerate this image alone.

        For an edited image they name the init image (and mask) by their recorded paths, after checking that the
        files are still there and unchanged (see `check_sources`). An upscaled image is generated by these, then
        upscaled by `upscale_kwargs()`.
        """
        if self.mode == UPSCALE_MODE:
            raise ValueError(
                "This image was upscaled from a given image, not generated; upscale that image again with "
                "Text2Image.upscale(**metadata.upscale_kwargs())."
            )
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

    def upscale_kwargs(self) -> dict[str, Any] | None:
        """Arguments of [`Text2Image.upscale`] that upscale as this image was (the image to upscale aside: the one
        `generate_kwargs()` makes, or for mode "upscale" `init_image`, checked); `None` if it was not upscaled."""
        if self.upscaler is None:
            return None
        kwargs = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "noise_level": self.upscale_noise_level,
            "num_inference_steps": self.upscale_num_inference_steps,
            "guidance_scale": self.upscale_guidance_scale,
            "upscaler_model": self.upscaler,
        }
        if self.mode == UPSCALE_MODE:
            self.check_sources()
            kwargs["images"] = self.init_image
        return kwargs

    def check_sources(self) -> None:
        """Raise `ValueError` unless the init image and mask this image was made from are still at their recorded
        paths with the same content (sha256 of the file); a different file would give a different image."""
        modes = (*MODES, UPSCALE_MODE)
        if self.mode not in modes:
            raise ValueError(f"Unknown mode {self.mode!r} in the metadata; expected one of: {', '.join(modes)}.")
        sources = {"text2img": [], "img2img": ["init_image"], "inpaint": ["init_image", "mask_image"],
                   UPSCALE_MODE: ["init_image"]}[self.mode]  # fmt: skip
        for name in sources:
            path, recorded = getattr(self, name), getattr(self, f"{name}_sha256")
            what = name.replace("_", " ")
            if path is None:
                argument = "images" if self.mode == UPSCALE_MODE else "image" if name == "init_image" else name
                raise ValueError(
                    f"This {self.mode} image was made from an in-memory {what}, which its metadata cannot bring back; "
                    f"pass the same image again as {argument}=."
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
    def from_dict(cls, data: dict[str, Any], source: str = "metadata") -> ImageMetadata:
        names = list(_METADATA_TYPES)
        missing = [name for name in names if name not in data and name not in _OPTIONAL_FIELDS | _DEFAULT_FIELDS]
        if missing:
            raise ValueError(f"{source} lacks the field(s) {', '.join(missing)}; is it a text2img.py sidecar?")
        return cls(**{name: data.get(name) for name in names if name in data or name not in _DEFAULT_FIELDS})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ImageMetadata:
        """Read the metadata of an image from its JSON sidecar or from the PNG itself."""
        path = Path(path)
        limit = PNG_METADATA_MAX_BYTES if path.suffix.lower() == ".png" else METADATA_MAX_BYTES
        check_small_regular_file(path, "Metadata file", limit)  # not /dev/zero, not a huge file read whole
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


def library_versions() -> dict[str, str]:
    """The `*_version` fields of `ImageMetadata`: the libraries that shaped the pixels."""
    import diffusers
    import torch

    from .. import __version__

    return {"ddpm_hub_version": __version__, "diffusers_version": diffusers.__version__,
            "torch_version": torch.__version__}  # fmt: skip


_METADATA_TYPES = typing.get_type_hints(ImageMetadata)
# Text fields go into PNG chunks as they are; the others as JSON (numbers, booleans).
_TEXT_FIELDS = {name for name, hint in _METADATA_TYPES.items() if hint in (str, str | None)}
_OPTIONAL_FIELDS = {name for name, hint in _METADATA_TYPES.items() if type(None) in typing.get_args(hint)}
_DEFAULT_FIELDS = {f.name for f in dataclasses.fields(ImageMetadata) if f.default is not dataclasses.MISSING}


# ----------------------------------------------------------------------------------------------------------------
# Output: images plus metadata, saved so that runs never overwrite each other.
# ----------------------------------------------------------------------------------------------------------------


def slug(text: str, max_length: int = 40) -> str:
    """`text` as a file-name part: lower-case letters and digits joined by "-"."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_length].rstrip("-")
    return words or "image"


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
            stem = f"{_timestamp(meta)}-{meta.index:03d}-{meta.seed}-{slug(meta.prompt)}"
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
        per_image = ("seed", "index", "nsfw_content_detected", "clip_score")
        text = {k: v for k, v in first.png_text().items() if k not in per_image}
        text["seeds"] = json.dumps([meta.seed for meta in metadata])
        if any(meta.clip_score is not None for meta in metadata):
            text["clip_scores"] = json.dumps([meta.clip_score for meta in metadata])
        text["images"] = json.dumps([path.name for path in image_paths])
        rows, cols = grid_shape(len(images))
        stem = f"{_timestamp(first)}-grid-{first.index:03d}-{slug(first.prompt)}"
        return _write_new(output_dir, stem, {".png": _png_writer(make_image_grid(images, rows, cols), text)})[".png"]


def _timestamp(meta: ImageMetadata) -> str:
    return datetime.fromisoformat(meta.created).strftime("%Y%m%d-%H%M%S")
