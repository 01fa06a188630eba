"""Super-resolution and cascades beyond the pipeline's own `upscale` (`ddpm_hub/pipeline_superres.py`, shipped beside
the weights): the cascade class and `ddpm-hub sample --upscaler` (`cascade.py`), and the part of a training run that
makes it train an upscaler (`part.py`, built by `ddpm_hub/train.py` from `--low_resolution`).

    from ddpm_hub.superres import DDPMHubCascade
"""

from .cascade import DDPMHubCascade, DDPMHubCascadeOutput, check_chain

__all__ = ["DDPMHubCascade", "DDPMHubCascadeOutput", "check_chain"]
