"""Who may make the explorer do what: which models and run folders load when it is shared, and how big a request is.

On 127.0.0.1 the explorer is one person's tool and loads whatever they type. Served to a network (`--host
0.0.0.0`, `--share`, a Hugging Face Space) every visitor shares the machine: only the models and run folders
named on the command line (or with `--allow`) load, messages do not show the machine's paths, and every request is
bounded (`Limits`), so that one visitor cannot exhaust the server for the others.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
REFUSED = (
    "This explorer is shared, so it only opens the {what} it was started with (`ddpm-hub explore MODEL`, or "
    "`--allow NAME` on the server)."
)
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/])(?:~|/)[^\s'\"]*")


def is_exposed(host: str | None, share: bool = False) -> bool:
    """Whether the explorer is reachable by others: a non-loopback address, a gradio.live link, or a Space."""
    return share or (host or "127.0.0.1") not in LOCAL_HOSTS or bool(os.environ.get("SPACE_ID"))


@dataclass(frozen=True)
class Limits:
    """The largest request the explorer serves; anything bigger is refused in one line before work starts."""

    max_steps: int = 200  # step by step, samplers compared (the sliders' own maximum)
    max_samplers: int = 12  # samplers compared at once, each at most once
    max_train_timesteps: int = 4000  # T of the forward process and schedules panels
    max_schedules: int = 8
    max_text2image_steps: int = 150
    max_text2image_side: int = 1024  # pixels, height and width each
    max_text2image_pixels: int = 768 * 768  # height x width (1024 x 1024 takes minutes on a CPU)
    max_upscale_pixels: int = 256 * 256  # of the image to upscale: its output is 16 times that (1024 x 1024)
    max_upload_bytes: int = 20 * 2**20
    max_image_pixels: int = 4096 * 4096  # of an uploaded image, checked from its header before decoding
    max_data_images: int = 64  # first images of a streamed data set offered (each set is read once)
    max_data_sets: int = 4  # streamed data sets whose images are kept at once (the oldest goes first)
    queue_size: int = 16  # requests waiting; more are refused ("the queue is full") rather than kept
    concurrency: int = 1  # model work running at once, across all visitors
    session_seconds: int = 3600  # a session's own loaded model is dropped after this long unused

    def check_steps(self, steps: int, most: int | None = None) -> int:
        most = self.max_steps if most is None else most
        if not 1 <= int(steps) <= most:
            raise ValueError(f"Steps must be between 1 and {most}, got {int(steps)}.")
        return int(steps)

    def check_samplers(self, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("Choose each sampler at most once.")
        if not 1 <= len(names) <= self.max_samplers:
            raise ValueError(f"Choose between 1 and {self.max_samplers} samplers, got {len(names)}.")
        return names

    def check_timesteps(self, T: int) -> int:
        if not 2 <= int(T) <= self.max_train_timesteps:
            raise ValueError(f"T must be between 2 and {self.max_train_timesteps}, got {int(T)}.")
        return int(T)

    def check_text2image_size(self, height: int | None, width: int | None) -> None:
        for name, side in (("height", height), ("width", width)):
            if side is not None and not 8 <= side <= self.max_text2image_side:
                raise ValueError(f"The {name} must be between 8 and {self.max_text2image_side} pixels, got {side}.")
        if height and width and height * width > self.max_text2image_pixels:
            raise ValueError(
                f"{height}x{width} is more than this explorer's {self.max_text2image_pixels} pixels per image; "
                "choose a smaller size."
            )

    def check_upscale_size(self, height: int, width: int) -> None:
        if height * width > self.max_upscale_pixels:
            raise ValueError(
                f"{height}x{width} is more than this explorer upscales ({self.max_upscale_pixels} pixels, 16 times "
                "that once upscaled); generate a smaller image."
            )


def _normalized(name: str) -> set[str]:
    """The forms under which `name` may have been allowed: as typed, and as an absolute local path."""
    name = name.strip()
    forms = {name}
    if name:
        forms.add(str(Path(name).expanduser().resolve()))
    return forms


@dataclass
class Access:
    """What the explorer may load. Local (`exposed=False`): anything. Shared: only the names in `allowed`."""

    exposed: bool = False
    allowed: set[str] = field(default_factory=set)

    def allow(self, names: Iterable[str | None]) -> None:
        for name in names:
            if name:
                self.allowed |= _normalized(str(name))

    def permits(self, name: str) -> bool:
        return not self.exposed or bool(_normalized(str(name)) & self.allowed)

    def check(self, name: str, what: str = "models") -> None:
        """Raise `ValueError` (saying nothing about `name` or the machine) when a shared explorer may not load it."""
        if not self.permits(name):
            raise ValueError(REFUSED.format(what=what))

    def public(self, message: str) -> str:
        """`message` as a visitor of a shared explorer sees it: local paths cut to their last part."""
        if not self.exposed:
            return message
        return _ABSOLUTE_PATH.sub(lambda match: Path(match.group()).name or "…", message)
