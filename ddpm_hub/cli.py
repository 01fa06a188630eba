"""The `ddpm-hub` command: share and check trained pipelines without retraining.

    ddpm-hub push OUTPUT_DIR --repo_id org/name [--private] [--revision BRANCH] [--commit_message MSG]
    ddpm-hub sample org/name --output grid.png [--sampler ddim] [--num_inference_steps 50] [--num_images 16]
        [--class_label NAME_OR_ID ...] [--guidance_scale 3] [--compile]
        [--init_image PATH [--strength 0.8] | --init_image PATH --mask_image PATH | --interpolate A B --num_frames 8]
    ddpm-hub schedules --output schedules.png
    ddpm-hub eval MODEL --reference DATA [--num_samples 2048] [--metrics fid,kid,pr] [--features efficientnet-lite0]
    ddpm-hub explore [MODEL] [--port 7860] [--host 127.0.0.1] [--share]
"""

from __future__ import annotations

import argparse
import sys

from .arguments import one_line
from .pipeline_ddpm_hub import COMPILE_MODES, SAMPLERS


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
    sample.add_argument(
        "--class_label",
        action="append",
        default=None,
        help="Class-conditional models: a class name or id, one grid row each; repeat it or give a comma-separated "
        "list (default: every class, up to 16).",
    )
    sample.add_argument(
        "--guidance_scale",
        type=float,
        default=None,
        help="Classifier-free guidance scale for conditional models: 1 = conditional only, 0 = unconditional "
        "(default: 3).",
    )
    sample.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA graphs on CUDA).")
    sample.add_argument("--compile_mode", default=None, choices=list(COMPILE_MODES), help="Default: reduce-overhead on CUDA.")
    sample.add_argument("--compile_backend", default="inductor", help="torch.compile backend (aot_eager: no codegen).")
    sample.add_argument("--init_image", default=None, help="Image to image (SDEdit) from this image, with --sampler.")
    sample.add_argument(
        "--strength", type=float, default=None, help="With --init_image: noise to add, 0 to 1 (default 0.8)."
    )
    sample.add_argument(
        "--mask_image",
        default=None,
        help="With --init_image: inpaint the white region of this mask (RePaint, with its own steps, not --sampler).",
    )
    sample.add_argument("--jump_length", type=int, default=10, help="RePaint: levels per resampling jump.")
    sample.add_argument("--jump_n_sample", type=int, default=10, help="RePaint: times each stretch is denoised.")
    sample.add_argument(
        "--interpolate",
        nargs=2,
        default=None,
        metavar=("A", "B"),
        help="Two image paths or two seeds (integers): a strip of frames from A to B (DDIM inversion + slerp).",
    )
    sample.add_argument("--num_frames", type=int, default=8, help="With --interpolate: frames, both ends included.")

    schedules = commands.add_parser("schedules", help="Plot alpha_bar(t) and SNR(t) of noise schedules (PNG).")
    schedules.add_argument("--output", default="schedules.png")
    schedules.add_argument("--schedules", nargs="+", default=["linear", "cosine", "quadratic", "sigmoid"])
    schedules.add_argument("--num_train_timesteps", type=int, default=1000)

    evaluate = commands.add_parser(
        "eval", help="Score a model's samples (or a folder of images) against a data set: FID, KID, precision/recall, IS."
    )
    evaluate.add_argument("model", help="Pipeline folder, Hub repo id, or a folder of already generated images.")
    evaluate.add_argument(
        "--reference",
        required=True,
        help="A folder of images, a built-in set (twemoji, shapes), a Hub/saved data set, or WebDataset shards "
        "(a pattern, folder or URL as for --train_shards: its first --max_reference_images, default 10000, images).",
    )
    evaluate.add_argument("--reference_config", default=None, help="The reference data set's config, if it has several.")
    evaluate.add_argument("--image_column", default=None, help="The reference data set's image column.")
    evaluate.add_argument("--max_reference_images", type=int, default=None, help="Use a seeded subset of the reference.")
    evaluate.add_argument("--num_samples", type=int, default=2048, help="Images to generate (FID needs more than the feature dimension).")
    evaluate.add_argument("--sampler", default="ddim", choices=list(SAMPLERS))
    evaluate.add_argument("--num_inference_steps", type=int, default=50)
    evaluate.add_argument("--metrics", default="fid,kid,pr", help="Comma-separated: fid, kid, pr (precision/recall), is.")
    evaluate.add_argument("--features", default="efficientnet-lite0", help="Feature extractor: efficientnet-lite0[-40|-80|-112|-192|-320] (offline) or inception.")
    evaluate.add_argument("--batch_size", type=int, default=64, help="Images per sampling and feature batch.")
    evaluate.add_argument("--seed", type=int, default=0, help="Image i uses seed + i.")
    evaluate.add_argument("--resolution", type=int, default=None, help="For a folder of images: crop size (default: the first image's).")
    evaluate.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub repo.")
    evaluate.add_argument("--cache_dir", default=None, help="Where reference statistics are cached (default ~/.cache/ddpm_hub).")
    evaluate.add_argument("--save_images", default=None, help="Also save the generated images as PNGs in this folder.")
    evaluate.add_argument("--output", default="eval_results.json", help="Where to write the results (JSON).")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, mps...")
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


def _class_labels(values: list[str] | None) -> list[str] | None:
    # "--class_label cat,dog --class_label 3" -> ["cat", "dog", "3"]; the pipeline reads names, and digits as ids.
    if not values:
        return None
    labels = [label.strip() for value in values for label in value.split(",")]
    if any(not label for label in labels):
        raise ValueError(f"--class_label got an empty name in {values}.")
    return labels


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "prepare":  # its own module and config (ddpm_hub/data/prepare.py)
        from .data.prepare import main as prepare_main

        return prepare_main(argv[1:])
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
                class_labels=_class_labels(args.class_label),
                guidance_scale=args.guidance_scale,
                compile=args.compile,
                compile_mode=args.compile_mode,
                compile_backend=args.compile_backend,
                init_image=args.init_image,
                strength=args.strength,
                mask_image=args.mask_image,
                jump_length=args.jump_length,
                jump_n_sample=args.jump_n_sample,
                interpolate=args.interpolate,
                num_frames=args.num_frames,
            )
            print(f"Saved {path}")
        elif args.command == "eval":
            _run_eval(args)
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


def _run_eval(args) -> None:
    import logging

    from .evaluation.evaluate import evaluate_model, format_table
    from .files import write_json

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    result = evaluate_model(
        args.model,
        args.reference,
        num_samples=args.num_samples,
        sampler=args.sampler,
        num_inference_steps=args.num_inference_steps,
        metrics=args.metrics,
        features=args.features,
        batch_size=args.batch_size,
        seed=args.seed,
        revision=args.revision,
        reference_config=args.reference_config,
        image_column=args.image_column,
        max_reference_images=args.max_reference_images,
        resolution=args.resolution,
        cache_dir=args.cache_dir,
        device=args.device,
        save_images=args.save_images,
    )
    if result is not None:  # the main process
        write_json(args.output, result)
        print(format_table(result))
        print(f"Saved {args.output}")


if __name__ == "__main__":
    raise SystemExit(main())
