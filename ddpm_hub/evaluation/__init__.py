"""Sample-quality evaluation: metrics (`metrics.py`), feature extractors (`features.py`), cached reference
statistics (`reference.py`), sampling and scoring a model (`evaluate.py`, `ddpm-hub eval`) and evaluation during
training (`during_training.py`)."""

from __future__ import annotations

from ..choices import EFFICIENTNET, EXTRACTORS, INCEPTION, METRICS, check_sample_count, feature_dim, parse_metrics

__all__ = ["EFFICIENTNET", "EXTRACTORS", "INCEPTION", "METRICS", "check_sample_count", "feature_dim", "parse_metrics"]
