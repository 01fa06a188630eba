"""The `ddpm-hub` command: share and check trained pipelines without retraining.

    ddpm-hub push OUTPUT_DIR --repo_id org/name [--private] [--revision BRANCH] [--commit_message MSG]
    ddpm-hub sample org/name --output grid.png [--sampler ddim] [--num_inference_steps 50] [--num_images 16]
        [--class_label NAME_OR_ID ...] [--guidance_scale 3] [--classifier CLF --classifier_scale 4] [--compile]
        [--output_dir DIR]
        [--init_image PATH [--strength 0.8] | --init_image PATH --mask_image PATH | --interpolate A B --num_frames 8]
    ddpm-hub schedules --output schedules.png
    ddpm-hub eval MODEL --reference DATA [--num_samples 2048] [--metrics fid,kid,pr] [--features efficientnet-lite0]
    ddpm-hub explore [MODEL] [--port 7860] [--host 127.0.0.1] [--share] [--data SHARDS]
    ddpm-hub prepare SRC OUT [--resolution 64] [--shard_size 1000]
    ddpm-hub distill TEACHER --output_dir OUT [--start_steps 256] [--end_steps 4] [--steps_per_round 2000] [...]
    ddpm-hub train-classifier --pretrained_model_name_or_path MODEL --train_data_dir CLASS_FOLDERS --output_dir OUT
    ddpm-hub ema RUN --output_dir OUT (--sigma_rel 0.07 | --sweep 0.02:0.25:12) [--step N] [eval flags]
    ddpm-hub eval-text2img MODEL --prompts prompts.txt [--compare SCHEDULER_OR_MODEL ...] [--reference DIR] [...]

Every subcommand is a dataclass config (`cli_config.py`) parsed by `ddpm_hub.arguments.parse_config`, the parser
of training, so `--help`, unknown flags (exit 2, with the closest real flag) and bad values (exit 2, one line) look
the same everywhere. To add a subcommand, write its own module with a dataclass config and a `main(argv) -> int`
that calls `parse_config(..., prog="ddpm-hub NAME")`, and add one line to `EXTERNAL_COMMANDS`: its name, its help
(for `ddpm-hub --help`) and its module, imported only when the subcommand runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys

from .arguments import config_parser, one_line, parse_with
from .cli_config import EvalConfig, EvalTarget, ExploreConfig, PushConfig, SampleConfig, SchedulesConfig

# Subcommands defined here: name -> (help, config types).
COMMANDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "push": ("Push a training output folder (or saved pipeline) to the Hub.", (PushConfig,)),
    "sample": ("Load a pipeline (Hub id or folder) and save a grid of samples.", (SampleConfig,)),
    "schedules": ("Plot alpha_bar(t) and SNR(t) of noise schedules (PNG).", (SchedulesConfig,)),
    "eval": (
        "Score a model's samples (or a folder of images) against a data set: FID, KID, precision/recall, IS.",
        (EvalTarget, EvalConfig),
    ),
    "explore": ("Open the interactive explorer (a Gradio app; needs [app]).", (ExploreConfig,)),
}

# Subcommands that live in their own module, whose `main(argv)` takes the rest of the command line: name -> (help,
# module).
EXTERNAL_COMMANDS: dict[str, tuple[str, str]] = {
    "distill": ("Distill a trained pipeline into a few-step student (progressive distillation).", "distill.command"),
    "prepare": (
        "Write WebDataset shards (and a manifest) from an image folder or a data set, for --train_shards.",
        "prepare",
    ),
    "ema": (
        "Reconstruct a post-hoc EMA of any length from a run's EMA snapshots, or sweep lengths by FID.",
        "posthoc_ema.command",
    ),
    "eval-text2img": (
        "Score a text-to-image model on a prompt file (CLIP score; FID/KID), or compare models.",
        "text2img.evaluate",
    ),
    "train-classifier": (
        "Train a noise-aware classifier of a model's x_t, for classifier guidance (--classifier).",
        "classifier_training.command",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: lists the subcommands (for `ddpm-hub --help` and a missing or unknown subcommand)."""
    parser = argparse.ArgumentParser(prog="ddpm-hub", description="Share, check and inspect DDPM pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help, _) in COMMANDS.items():
        commands.add_parser(name, help=help, add_help=False)
    for name, (help, _) in EXTERNAL_COMMANDS.items():
        commands.add_parser(name, help=help, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTERNAL_COMMANDS:
        module = importlib.import_module(f".{EXTERNAL_COMMANDS[argv[0]][1]}", __package__)
        return module.main(argv[1:])
    top = build_parser()
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv)  # --help, or a missing or unknown subcommand: argparse's message, exit 0 or 2
        return 2
    command, (help, config_types) = argv[0], COMMANDS[argv[0]]
    configs = parse_with(config_parser(config_types, prog=f"ddpm-hub {command}", description=help), argv[1:])
    try:
        return RUNNERS[command](*configs)
    except ValueError as error:
        top.error(str(error))
    except Exception as error:  # Hub and file errors: one line, no traceback
        print(f"ddpm-hub {command}: error: {type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return 1


def _push(config: PushConfig) -> int:
    from .hub import push_folder

    options = dataclasses.asdict(config)
    url = push_folder(options.pop("output_dir"), options.pop("repo_id"), **options)
    print(f"Pushed: {url}")
    return 0


def _sample(config: SampleConfig) -> int:
    if config.upscaler or config.low_res_image is not None:  # through a cascade of super-resolution models
        from .superres.cascade import render_cascade as render_grid
    else:
        from .sampling import render_grid

    print(f"Saved {render_grid(config)}")
    return 0


def _schedules(config: SchedulesConfig) -> int:
    from .schedules import plot_schedules

    print(f"Saved {plot_schedules(config.output, tuple(config.schedules), config.num_train_timesteps)}")
    return 0


def _eval(target: EvalTarget, scoring: EvalConfig) -> int:
    import logging

    from .evaluation.evaluate import evaluate_model, format_table
    from .files import write_json

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    options = dataclasses.asdict(target)
    output = options.pop("output")
    result = evaluate_model(options.pop("model"), options.pop("reference"), **options, **dataclasses.asdict(scoring))
    if result is not None:  # the main process
        write_json(output, result)
        print(format_table(result))
        print(f"Saved {output}")
    return 0


def _explore(config: ExploreConfig) -> int:
    from .app import INSTALL_HINT, explore

    try:
        import gradio  # noqa: F401
    except ImportError:
        print(f"ddpm-hub explore: {INSTALL_HINT}", file=sys.stderr)
        return 1
    if config.data:  # a missing or unreadable --data is one line before the app starts
        from .app.panels import resolve_data

        try:
            resolve_data(config.data, "--data")
        except ValueError as error:
            print(f"ddpm-hub explore: {error}", file=sys.stderr)
            return 2
    explore(
        config.model,
        host=config.host,
        port=config.port,
        share=config.share,
        outputs_dir=config.outputs_dir,
        allow=config.allow,
        data=config.data,
    )
    return 0


RUNNERS = {"push": _push, "sample": _sample, "schedules": _schedules, "eval": _eval, "explore": _explore}


if __name__ == "__main__":
    raise SystemExit(main())
