"""Typed command-line configs: one dataclass per concern, parsed by transformers' `HfArgumentParser`.

Every entry point (`train_unconditional.py`, `text2img.py`, each `ddpm-hub` subcommand) parses through
`parse_config`, so they share one behaviour:

- `--help` lists every field with its choices and default (argparse's `ArgumentDefaultsHelpFormatter`);
- an unknown or misspelled flag ends as argparse ends: the usage, one line naming the flag and the closest real one
  (`unrecognized argument --learning_rat; did you mean --learning_rate?`), exit status 2;
- each config may define `validate()`, which raises `ValueError` with a sentence naming the bad value; that too
  becomes argparse's one-line error and exit status 2, before any heavy work starts.

A field becomes a positional argument with `metadata={"positional": True}` (optional when it has a default), and
`nargs`, `action` or `metavar` in its metadata override what `HfArgumentParser` derives from the type, e.g.
`--interpolate A B` is `list[str] | None` with `{"nargs": 2, "metavar": ("A", "B")}`, and a switch beside a positional
is `{"action": "store_true"}` (`HfArgumentParser`'s own `--flag [true|false]` would take the positional as its value).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any

_OVERRIDES = ("nargs", "action", "metavar")


class _Recorder:
    """Stands in for a parser to capture the `add_argument` calls `HfArgumentParser` derives from one field."""

    def __init__(self):
        self.calls: list[tuple[tuple, dict]] = []

    def add_argument(self, *names, **kwargs) -> None:
        self.calls.append((names, kwargs))


def _config_parser_class():
    from transformers import HfArgumentParser

    class ConfigParser(HfArgumentParser):
        """`HfArgumentParser` with positional fields, metadata overrides, and argparse's end for unknown flags."""

        @staticmethod
        def _parse_dataclass_field(parser, field: dataclasses.Field) -> None:
            metadata = field.metadata
            if not metadata.get("positional") and not any(key in metadata for key in _OVERRIDES):
                return HfArgumentParser._parse_dataclass_field(parser, field)
            recorder = _Recorder()
            HfArgumentParser._parse_dataclass_field(recorder, field)
            (names, kwargs), *complements = recorder.calls
            kwargs.pop("positional", None)
            kwargs.update({key: metadata[key] for key in _OVERRIDES if key in metadata})
            if kwargs.get("action") in ("store_true", "store_false"):
                for key in ("type", "nargs", "const"):  # a plain switch: it never takes the next word as its value
                    kwargs.pop(key, None)
            if metadata.get("positional"):
                names = (field.name,)
                if not kwargs.pop("required", False):
                    kwargs.setdefault("nargs", "?")
            parser.add_argument(*names, **{k: v for k, v in kwargs.items() if k not in _OVERRIDES or v is not None})
            for complement_names, complement_kwargs in complements:
                parser.add_argument(*complement_names, **complement_kwargs)

    return ConfigParser


def unknown_argument_message(parser, remaining: Sequence[str]) -> str:
    """'unrecognized argument --learning_rat; did you mean --learning_rate?' for the arguments no field took."""
    flags = [
        arg.split("=", 1)[0] for arg in remaining if arg.startswith("--") or (arg.startswith("-") and len(arg) == 2)
    ]
    if not flags:
        return f"unrecognized arguments: {' '.join(remaining)}"
    known = [option for option in parser._option_string_actions if option.startswith("--")]
    close = difflib.get_close_matches(flags[0], known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; see {parser.prog} --help"
    more = f" (and {', '.join(flags[1:])})" if len(flags) > 1 else ""
    return f"unrecognized argument {flags[0]}{more}{hint}"


def config_parser(config_types: Sequence[type], **parser_kwargs):
    """The `HfArgumentParser` (with the additions above) for `config_types`; `parser_kwargs` go to argparse."""
    # No abbreviations: `--learning_rat` must not pass silently as `--learning_rate` (nor break when a flag is added).
    parser_kwargs.setdefault("allow_abbrev", False)
    return _config_parser_class()(list(config_types), **parser_kwargs)


def parse_config(config_types: Sequence[type], argv: Sequence[str] | None = None, **parser_kwargs) -> tuple[Any, ...]:
    """Parse `argv` into one instance of each dataclass in `config_types`, validated.

    Args:
        config_types (`Sequence[type]`): dataclasses whose fields become `--flags` (or positionals, see above).
        argv (`Sequence[str]`, *optional*): arguments to parse; defaults to `sys.argv[1:]`.
        parser_kwargs: passed to `HfArgumentParser` (`prog`, `description`, ...).

    Returns:
        One instance per type, in order. Bad input exits with status 2 through `parser.error`.
    """
    return parse_with(config_parser(config_types, **parser_kwargs), argv)


def parse_with(parser, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """`parse_config` with a parser from `config_parser` (to call its `error` later, as the CLI does)."""
    *configs, remaining = parser.parse_args_into_dataclasses(
        args=list(argv) if argv is not None else None, return_remaining_strings=True
    )
    if remaining:
        parser.error(unknown_argument_message(parser, remaining))
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
