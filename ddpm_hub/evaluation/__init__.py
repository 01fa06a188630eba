"""Sample-quality evaluation: metrics (`metrics.py`), feature extractors (`features.py`), cached reference
statistics (`reference.py`), sampling and scoring a model (`evaluate.py`, `ddpm-hub eval`) and evaluation during
training (`during_training.py`)."""

from __future__ import annotations

from .features import EFFICIENTNET, EXTRACTORS, INCEPTION, feature_dim

# Metric names for --metrics / --eval_metrics: Fréchet distance, kernel distance, precision/recall, Inception Score.
METRICS = ("fid", "kid", "pr", "is")


def parse_metrics(text: str | list[str] | tuple[str, ...], flag: str = "--metrics") -> tuple[str, ...]:
    """'fid,kid' -> ('fid', 'kid'); an unknown or empty name is a one-line `ValueError`."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise ValueError(f"{flag} names no metric; choose from: {', '.join(METRICS)}.")
    for name in names:
        if name not in METRICS:
            raise ValueError(f"{flag} {name!r} is not one of: {', '.join(METRICS)}.")
    return tuple(dict.fromkeys(names))


def check_sample_count(num_samples: int, features: str, metrics, flag: str = "--num_samples") -> None:
    """FID needs a full-rank covariance: more images than feature dimensions (one-line `ValueError` otherwise)."""
    dim = feature_dim(features)
    if "fid" in metrics and num_samples <= dim:
        raise ValueError(
            f"{flag} {num_samples} is too few for FID with {features} ({dim}-dimensional features): it needs more "
            f"than {dim} images; raise {flag}, or use a smaller extractor such as {EFFICIENTNET}-112."
        )


__all__ = ["EFFICIENTNET", "EXTRACTORS", "INCEPTION", "METRICS", "check_sample_count", "feature_dim", "parse_metrics"]
