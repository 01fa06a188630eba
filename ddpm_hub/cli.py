"""The `ddpm-hub` command: share and check trained pipelines without retraining.

    ddpm-hub push OUTPUT_DIR --repo_id org/name [--private] [--revision BRANCH] [--commit_message MSG]
    ddpm-hub sample org/name --output grid.png [--sampler ddim] [--num_inference_steps 50] [--num_images 16]
    ddpm-hub schedules --output schedules.png
    ddpm-hub explore [MODEL] [--port 7860] [--host 127.0.0.1] [--share]
"""

from __future__ import annotations

import argparse
import sys

from .arguments import one_line
from .pipeline_ddpm_hub import SAMPLERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpm-hub", description="Share, check and inspect DDPM pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)

    push = commands.add_parser("push", help="Push a training output folder (or saved pipeline) to the Hub.")
    push.add_argument("output_dir", help="Folder holding model_index.json, unet/ and scheduler/.")
    push.add_argument("--repo_id", required=True, help="Target repo, 'name' or 'org/name'.")
    push.add_argument("--private", action="store_true", help="Create the repo private.")
    push.add_argument("--revision", default=None, help="Push to this branch (created if missing).")
    push.add_argument("--commit_message", default="Upload DDPM pipeline with ddpm-hub")
    push.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login).")

    sample = commands.add_parser("sample", help="Load a pipeline (Hub id or folder) and save a grid of samples.")
    sample.add_argument("model", help="Hub repo id or local pipeline folder.")
    sample.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub repo.")
    sample.add_argument("--output", default="samples.png", help="Where to write the grid (PNG).")
    sample.add_argument("--sampler", default="ddim", choices=list(SAMPLERS))
    sample.add_argument("--num_inference_steps", type=int, default=50)
    sample.add_argument("--num_images", type=int, default=16)
    sample.add_argument("--seed", type=int, default=0, help="Image i uses seed + i.")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda, mps...")

    schedules = commands.add_parser("schedules", help="Plot alpha_bar(t) and SNR(t) of noise schedules (PNG).")
    schedules.add_argument("--output", default="schedules.png")
    schedules.add_argument("--schedules", nargs="+", default=["linear", "cosine", "quadratic", "sigmoid"])
    schedules.add_argument("--num_train_timesteps", type=int, default=1000)

    explore = commands.add_parser("explore", help="Open the interactive explorer (a Gradio app; needs [app]).")
    explore.add_argument(
        "model", nargs="?", default=None,
        help="Pipeline folder or Hub id (default: the newest training output in the current folder, if any).",
    )  # fmt: skip
    explore.add_argument("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0 exposes it to the network).")
    explore.add_argument("--port", type=int, default=None, help="Port (default: the first free one from 7860).")
    explore.add_argument("--share", action="store_true", help="Also open a public gradio.live link (off by default).")
    explore.add_argument("--outputs_dir", default="outputs", help="Where the Text to image panel saves images.")
    return parser


def _positive(parser, **values) -> None:
    for name, value in values.items():
        if value < 1:
            parser.error(f"--{name} must be positive, got {value}.")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "push":
            from .hub import push_folder

            url = push_folder(
                args.output_dir,
                args.repo_id,
                private=args.private,
                revision=args.revision,
                commit_message=args.commit_message,
                token=args.token,
            )
            print(f"Pushed: {url}")
        elif args.command == "sample":
            _positive(parser, num_inference_steps=args.num_inference_steps, num_images=args.num_images)
            from .sampling import render_grid

            path = render_grid(
                args.model,
                args.output,
                revision=args.revision,
                sampler=args.sampler,
                num_inference_steps=args.num_inference_steps,
                num_images=args.num_images,
                seed=args.seed,
                device=args.device,
            )
            print(f"Saved {path}")
        elif args.command == "explore":
            if args.port is not None and not 0 < args.port < 65536:
                parser.error(f"--port must be in 1..65535, got {args.port}.")
            from .app import INSTALL_HINT, explore

            try:
                import gradio  # noqa: F401
            except ImportError:
                print(f"ddpm-hub explore: {INSTALL_HINT}", file=sys.stderr)
                return 1

            explore(args.model, host=args.host, port=args.port, share=args.share, outputs_dir=args.outputs_dir)
        else:
            from .schedules import plot_schedules

            print(f"Saved {plot_schedules(args.output, tuple(args.schedules), args.num_train_timesteps)}")
    except ValueError as error:
        parser.error(str(error))
    except Exception as error:  # Hub and file errors: one line, no traceback
        print(f"ddpm-hub {args.command}: error: {type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
