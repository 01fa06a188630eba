"""Super-resolution and cascades beyond the pipeline's own `upscale` (`ddpm_hub/pipeline_superres.py`, shipped beside
the weights): the cascade class and `ddpm-hub sample --upscaler` (`cascade.py`).

    from ddpm_hub.superres import DDPMHubCascade
"""

from .cascade import DDPMHubCascade, DDPMHubCascadeOutput, check_chain

__all__ = ["DDPMHubCascade", "DDPMHubCascadeOutput", "check_chain"]
