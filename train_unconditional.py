"""Train an unconditional DDPM image model with accelerate.

    accelerate launch train_unconditional.py                      # a small model on the built-in emoji set
    accelerate launch train_unconditional.py --help               # every flag

Flag names follow diffusers' examples/unconditional_image_generation/train_unconditional.py.
"""

from ddpm_hub.train import main

if __name__ == "__main__":
    raise SystemExit(main())
