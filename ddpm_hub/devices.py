"""Choosing the device to run on."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """Map "auto" to cuda, then mps, then cpu; check that an explicitly named device exists."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"Unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {device!r} was asked for but CUDA is not available here; use --device cpu.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"Device {device!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s).")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"Device {device!r} was asked for but MPS is not available here; use --device cpu.")
    elif resolved.type != "cpu":
        raise ValueError(f"Unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps.")
    return resolved
