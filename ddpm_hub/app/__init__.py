"""The ddpm-hub explorer: a Gradio app over the package's public API (`ddpm-hub explore`, or `space/app.py`).

Panels: forward process, schedules, step-by-step sampling, samplers compared, text to image, training monitor.
`panels` and `monitor` hold what each panel computes (no Gradio needed); `ui` lays them out with Gradio, which
comes with the optional extra: `pip install "ddpm-hub[app]"`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .models import is_pipeline_dir, is_training_output, newest_training_output

INSTALL_HINT = 'The explorer needs Gradio: pip install "ddpm-hub[app]"'


def _ui():
    try:
        from . import ui
    except ImportError as error:
        if error.name and error.name.split(".")[0] in ("gradio", "gradio_client"):
            raise ImportError(INSTALL_HINT) from error
        raise
    return ui


def resolve_targets(model: str | None, search_dir: str | os.PathLike = ".") -> tuple[str | None, str | None]:
    """(model to load, training run to monitor) for `ddpm-hub explore [MODEL]`.

    Without `model`, the newest training output in `search_dir` (or the folder itself) is both, when it holds a
    pipeline; a run that has not exported one yet is only monitored. A local `model` folder that is a training
    output is also monitored.
    """
    if model:
        local = Path(model).expanduser()
        return model, str(local) if is_training_output(local) else None
    run = newest_training_output(search_dir)
    if run is None:
        return None, None
    return (str(run) if is_pipeline_dir(run) else None), (str(run) if is_training_output(run) else None)


def build_app(model: str | None = None, **kwargs):
    """The explorer's `gr.Blocks` (see `ddpm_hub.app.ui.build_app`)."""
    return _ui().build_app(model, **kwargs)


def explore(
    model: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    outputs_dir: str = "outputs",
    search_dir: str | os.PathLike = ".",
    allow: list[str] | tuple[str, ...] = (),
    data: str | None = None,
) -> None:
    """Build the explorer for `model` (or the newest training output here) and serve it until Ctrl+C.

    Beyond 127.0.0.1 (or with `share`), visitors may open only `model`, its run folder, `data` (a streamed set whose
    first images the Forward process panel offers) and the names in `allow`.
    """
    from .access import is_exposed

    ui = _ui()
    model, run_dir = resolve_targets(model, search_dir)
    if model:
        print(f"Loading {model} ...", flush=True)
    demo = ui.build_app(
        model, run_dir=run_dir, outputs_dir=outputs_dir, exposed=is_exposed(host, share), allow=allow, data=data
    )
    print(demo.explorer.status, flush=True)
    ui.launch(demo, host=host, port=port, share=share)


__all__ = ["INSTALL_HINT", "build_app", "explore", "resolve_targets"]
