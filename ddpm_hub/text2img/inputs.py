"""The inputs of text-to-image generation and their one check path, shared by the command line (at parse time,
before any model loads), the Python API (`Text2Image.check_inputs` and `generate`) and regeneration from metadata."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("ddpm_hub.text2img")

# The checkpoint the product's design material uses; any diffusers text-to-image checkpoint works.
DEFAULT_MODEL = "stabilityai/stable-diffusion-2"

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# What `Text2Image.generate` does: from text alone, from an init image, or inside a mask of an init image.
MODES = ("text2img", "img2img", "inpaint")

# Hub ids are "org/name"; anything else must be an existing local folder.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class GenerationInputs:
    """The arguments of [`Text2Image.generate`] that shape the pixels (see its docstring), in one place.

    `check()` is the one input check: the command line calls it at parse time, `Text2Image.check_inputs` and
    `generate` after filling in the model's default strength, and `ImageMetadata.generate_kwargs` gives them back.
    """

    prompt: str | list[str]
    negative_prompt: str | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    num_images_per_prompt: int = 1
    seed: int | None = None
    image: Any = None
    strength: float | None = None
    mask_image: Any = None

    @classmethod
    def of(cls, arguments: dict[str, Any]) -> GenerationInputs:
        """The inputs among `arguments` (e.g. a function's `locals()`), by name; the others are ignored."""
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls) if f.name in arguments})

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def mode(self) -> str:
        return "text2img" if self.image is None else "img2img" if self.mask_image is None else "inpaint"

    def kwargs(self) -> dict[str, Any]:
        """As keyword arguments of `Text2Image.generate` (shallow: images stay the objects given)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def check(self) -> None:
        """Raise `ValueError` with a sentence naming the first bad value.

        An init image and a mask given as paths are opened here (not the model), so that a missing file, a file
        that is not an image, or a mask of another size than the image is refused before anything heavy loads.
        """
        if not self.prompts:
            raise ValueError("Give at least one prompt (--prompt or --prompts_file).")
        for prompt in self.prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"Prompts must be non-empty text, got {prompt!r}.")
        if self.negative_prompt is not None and self.guidance_scale <= 1:
            # diffusers silently ignores the negative prompt without classifier-free guidance.
            raise ValueError(
                f"A negative prompt only acts with classifier-free guidance; guidance_scale is {self.guidance_scale}, "
                "it must be above 1."
            )
        self._check_numbers()
        check_edit_inputs(
            self.image,
            self.strength,
            self.mask_image,
            num_inference_steps=self.num_inference_steps,
            height=self.height,
            width=self.width,
        )

    def _check_numbers(self) -> None:
        for name in ("num_inference_steps", "num_images_per_prompt"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {self.guidance_scale!r}.")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 8 or value % 8):
                raise ValueError(f"{name} must be a positive multiple of 8 (the VAE's downsampling), got {value!r}.")
        seed = self.seed
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}.")


def check_generation_inputs(prompts: Sequence[str], **inputs: Any) -> None:
    """`GenerationInputs(prompts, **inputs).check()` for a list of prompts: raise `ValueError` naming the first bad
    value (a single string is refused: this function checks what the command line parsed)."""
    if isinstance(prompts, str):
        raise ValueError("Give at least one prompt (--prompt or --prompts_file).")
    GenerationInputs(list(prompts), **inputs).check()


# A prompt file is text, one prompt a line; a file this big is a mistake (a data set, an image), not a prompt list.
PROMPTS_FILE_MAX_BYTES = 16 << 20


def read_prompts_file(path: str | os.PathLike, flag: str = "--prompts_file") -> list[str]:
    """The prompts of a UTF-8 text file, one a line (stripped; blank lines skipped).

    Raises `ValueError` naming `flag` and the path for a missing file, a folder or device, a file over 16 MB, one
    that is not text (NUL bytes, or not UTF-8: an image, a PDF), and one that holds no prompt.
    """
    name = os.fspath(path)
    file = Path(path)
    if not file.exists():
        raise ValueError(f"{flag} {name!r} does not exist.")
    if not file.is_file():
        raise ValueError(f"{flag} {name!r} is not a regular file; give a text file with one prompt a line.")
    if file.stat().st_size > PROMPTS_FILE_MAX_BYTES:
        raise ValueError(f"{flag} {name!r} is over {PROMPTS_FILE_MAX_BYTES >> 20} MB; give a text file with one "
                         "prompt a line.")  # fmt: skip
    data = file.read_bytes()
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\0"), data.index(b"\0") + 1, "NUL byte")
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of the first prompt
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{flag} {name!r} is not a UTF-8 text file (byte {error.start}); give a text file with one prompt a line."
        ) from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{flag} {name!r} holds no prompt (it is empty or blank).")
    return prompts


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
