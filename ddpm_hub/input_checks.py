"""Small checks of user input made before heavy work, each failing with one line (`ValueError`, exit status 2).

Where the result will be written, whether a model's weights can give anything but NaN, whether a mask marks
anything, whether a file is small enough to read: all cheap to know first, costly to find out after sampling.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

METADATA_MAX_BYTES = 1 << 20  # a text2img.py JSON sidecar is a few hundred bytes
PNG_METADATA_MAX_BYTES = 256 << 20  # PIL reads a PNG's text chunks by reading through the image


def check_output_file(output: str | os.PathLike, flag: str = "--output") -> Path:
    """The file `output` will be, checked: not a folder, an image suffix PIL writes, a parent that can be made.

    Missing parent folders are reported (they are created when the file is saved).
    """
    import PIL.Image

    path = Path(output).expanduser()
    if path.is_dir() or str(output).endswith(os.sep):
        raise ValueError(f"{flag} {str(output)!r} is a folder; give a file name, e.g. {str(path / 'samples.png')!r}.")
    suffix = path.suffix.lower()
    if suffix and suffix not in PIL.Image.registered_extensions():
        raise ValueError(f"{flag} {str(output)!r}: {suffix!r} is not an image format; use .png, .jpg or .webp.")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"{flag} {str(output)!r}: {str(existing)!r} is a file, not a folder.")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {str(output)!r}: the folder {str(existing)!r} is not writable.")
    if existing != parent:
        logger.warning("%s: creating the folder %s, which does not exist yet.", flag, parent)
        print(f"Creating the folder {parent} for {flag}.", flush=True)
    return path


def check_output_folder(output_dir: str | os.PathLike, flag: str = "--output_dir") -> Path:
    """The folder files will be written into, checked: not a file, and it or its nearest existing parent writable."""
    path = Path(output_dir).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"{flag} {str(output_dir)!r}: {str(existing)!r} is a file, not a folder.")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {str(output_dir)!r}: the folder {str(existing)!r} is not writable.")
    return path


def check_finite_model(unet, model: str) -> None:
    """Refuse a model whose weights hold NaN or infinity: everything it samples would be NaN (a black image)."""
    from .files import all_finite

    if not all_finite(unet.state_dict().values()):
        raise ValueError(
            f"the model {model!r} has NaN or infinite weights (its training diverged), so every image it made would "
            "be blank; use an earlier checkpoint or export."
        )


def check_mask_marks_something(path: str | os.PathLike, flag: str = "--mask_image") -> None:
    """Refuse a mask that is fully transparent: its colours are invisible, and it would silently fill everything."""
    import PIL.Image

    try:
        with PIL.Image.open(path) as image:
            if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
                return
            alpha = image.convert("RGBA").getchannel("A")
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return  # unreadable: the image check that follows says so
    if alpha.getextrema()[1] == 0:
        raise ValueError(
            f"{flag} {os.fspath(path)!r} is fully transparent, so it marks nothing; paint the area to fill in white "
            "on black, without transparency."
        )


def check_small_regular_file(path: str | os.PathLike, flag: str, max_bytes: int) -> None:
    """Refuse a device, pipe or folder, and a file over `max_bytes`, before reading it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{flag} {os.fspath(path)!r} does not exist.") from None
    except OSError as error:
        raise ValueError(f"{flag} {os.fspath(path)!r} cannot be read: {error.strerror}.") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{flag} {os.fspath(path)!r} is not a regular file.")
    if info.st_size > max_bytes:
        raise ValueError(
            f"{flag} {os.fspath(path)!r} is {info.st_size / 2**20:.1f} MB, more than a metadata file can be "
            f"({max_bytes / 2**20:.0f} MB); give the image's .json sidecar or the .png it describes."
        )
