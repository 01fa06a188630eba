"""Typed command-line configs: one dataclass per concern, parsed by transformers' `HfArgumentParser`.

Each config may define `validate()`, which raises `ValueError` with a sentence naming the bad value; `parse_config`
turns that into argparse's usual one-line error and exit status 2, before any heavy work starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def parse_config(config_types: Sequence[type], argv: Sequence[str] | None = None, **parser_kwargs) -> tuple[Any, ...]:
    """Parse `argv` into one instance of each dataclass in `config_types`, validated.

    Args:
        config_types (`Sequence[type]`): dataclasses whose fields become `--flags`.
        argv (`Sequence[str]`, *optional*): arguments to parse; defaults to `sys.argv[1:]`.
        parser_kwargs: passed to `HfArgumentParser` (`prog`, `description`, ...).
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(list(config_types), **parser_kwargs)
    configs = parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    try:
        for config in configs:
            if hasattr(config, "validate"):
                config.validate()
    except ValueError as error:
        parser.error(str(error))
    return tuple(configs)


def one_line(error: BaseException) -> str:
    """An error message on one line, however many lines the library that raised it used."""
    return " ".join(str(error).split())
