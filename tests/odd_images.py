"""A folder of images in every awkward format, and of files that only pretend to be images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

# name -> expected RGB of the centre pixel after conversion (None: the file must be skipped)
EXPECTED_CENTRE = {
    "rgb.png": (200, 30, 40),
    "gray.png": (77, 77, 77),
    "palette_transparent.png": (255, 255, 255),  # the transparent palette entry composites to white
    "rgba_half.png": (128, 255, 128),  # pure green at 50% alpha over white
    "gray16.png": (128, 128, 128),  # 32896 / 257
    "cmyk.jpg": (255, 0, 0),  # JPEG: approximately
    "one_bit.png": (255, 255, 255),
    "la.png": (255, 255, 255),  # fully transparent
    "wide.png": (10, 20, 30),
    "nested/deep.png": (0, 0, 255),
    "truncated.png": None,
    "empty.png": None,
    "text_pretending.jpg": None,
}
NOT_IMAGES = ["notes.txt", "data.csv"]


def make_odd_image_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nested").mkdir(exist_ok=True)
    PIL.Image.new("RGB", (24, 24), (200, 30, 40)).save(folder / "rgb.png")
    PIL.Image.new("L", (24, 24), 77).save(folder / "gray.png")
    palette = PIL.Image.new("P", (24, 24), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(folder / "palette_transparent.png", transparency=0)
    PIL.Image.new("RGBA", (24, 24), (0, 255, 0, 128)).save(folder / "rgba_half.png")
    PIL.Image.fromarray(np.full((24, 24), 32896, dtype=np.uint16)).save(folder / "gray16.png")
    PIL.Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=100)
    PIL.Image.new("1", (24, 24), 1).save(folder / "one_bit.png")
    PIL.Image.new("LA", (24, 24), (0, 0)).save(folder / "la.png")
    PIL.Image.new("RGB", (48, 24), (10, 20, 30)).save(folder / "wide.png")
    PIL.Image.new("RGB", (24, 24), (0, 0, 255)).save(folder / "nested" / "deep.png")
    good = (folder / "rgb.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text_pretending.jpg").write_text("this is not a JPEG")
    (folder / "notes.txt").write_text("not an image")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    return folder
