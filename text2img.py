"""Generate images from text prompts with Stable Diffusion: `python text2img.py --prompt "a cat wearing a hat"`.

The logic lives in `ddpm_hub.text2img`; run `python text2img.py --help` for the flags.
"""

from ddpm_hub.text2img import main

raise SystemExit(main())
