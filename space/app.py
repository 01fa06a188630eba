"""The ddpm-hub explorer as a Hugging Face Space (see README.md, "Explore" and "Deploy it as a Space").

Space variables (Settings -> Variables):
    DDPM_HUB_MODEL             the DDPMHubPipeline to explore, a Hub id like "your-name/emoji-ddpm" (optional)
    DDPM_HUB_TEXT2IMAGE_MODEL  the Stable Diffusion model of the Text to image panel (optional)
    DDPM_HUB_DATA              streamed shards whose first images the Forward process panel offers, e.g.
                               "hf://datasets/your-name/emoji-shards/train-{000000..000003}.tar" (optional)

Run it locally the same way: `DDPM_HUB_MODEL=ddpm-model python space/app.py`.
"""

import os

from ddpm_hub.app import build_app
from ddpm_hub.app.ui import launch

demo = build_app(
    os.environ.get("DDPM_HUB_MODEL") or None,
    text2image_model=os.environ.get("DDPM_HUB_TEXT2IMAGE_MODEL") or None,
    outputs_dir=os.environ.get("DDPM_HUB_OUTPUTS", "outputs"),
    data=os.environ.get("DDPM_HUB_DATA") or None,
)

if __name__ == "__main__":
    # Spaces set GRADIO_SERVER_NAME=0.0.0.0 so that their proxy can reach the app; on a laptop it stays local.
    launch(
        demo,
        host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
