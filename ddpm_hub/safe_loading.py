"""Loading models without running their files: safetensors weights only, and a readable `model_index.json`.

Pickled weights (`.bin`, `.pt`, `.ckpt`) are programs as much as data: even torch's `weights_only` loader has had
escapes (CVE-2025-32434). ddpm-hub loads every model with `use_safetensors=True`; a local folder that holds only
pickled weights is refused in one line that says how to convert it, unless the user opts in with
`DDPM_HUB_ALLOW_PICKLED_WEIGHTS=1` for a model they trust.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ALLOW_PICKLED_WEIGHTS = "DDPM_HUB_ALLOW_PICKLED_WEIGHTS"
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def pickled_weights_allowed() -> bool:
    return os.environ.get(ALLOW_PICKLED_WEIGHTS, "").strip().lower() in ("1", "true", "yes")


def weights_kwargs() -> dict[str, Any]:
    """Keyword arguments for diffusers' `from_pretrained`: safetensors only, unless the user opted in."""
    return {} if pickled_weights_allowed() else {"use_safetensors": True}


def check_local_model(model: str | os.PathLike, flag: str = "the model") -> None:
    """Refuse (one line, `ValueError`) a local model folder that cannot be loaded safely; Hub ids pass through.

    Args:
        model (`str` or `os.PathLike`): a folder or a Hub id.
        flag (`str`, defaults to `"the model"`): how the message names it, e.g. `"--pretrained_model_name_or_path"`.
    """
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return
    index = folder / "model_index.json"
    if index.is_file():
        try:
            content = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{flag} {str(model)!r}: model_index.json is not readable JSON ({error}).") from None
        if not isinstance(content, dict):
            raise ValueError(
                f"{flag} {str(model)!r}: model_index.json holds a {type(content).__name__}, not the object of "
                "component names a pipeline folder has."
            )
    if pickled_weights_allowed():
        return
    for part in (folder, *sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))):
        pickled = sorted(p.name for p in part.iterdir() if p.suffix in PICKLED_SUFFIXES and p.is_file())
        if pickled and not any(part.glob("*.safetensors")):
            loader = "DiffusionPipeline" if index.is_file() else "UNet2DModel"
            raise ValueError(
                f"{flag} {str(model)!r} holds only pickled weights ({part.relative_to(folder.parent)}/{pickled[0]}), "
                f'which can run code when loaded; if you trust them, convert them once: python -c "from diffusers '
                f"import {loader} as M; M.from_pretrained('{model}', use_safetensors=False).save_pretrained("
                f"'{model}-safetensors')\" (or set {ALLOW_PICKLED_WEIGHTS}=1)."
            )
