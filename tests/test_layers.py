"""The package's layers, declared here and checked from the source: every import (function-level ones too) goes from
a layer to the same or a lower one, and no module imports itself back through others (no import circles).

Bottom to top: the foundation (errors, files, flags), data, models and pipelines, evaluation, training, the parts a
run plugs into the Trainer, and the commands. The pipeline files travel beside the weights, so they import nothing
of ddpm-hub but each other. The package's own `__init__.py` only re-exports names lazily and is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ddpm_hub"

# Layer of each module or sub-package, bottom first. A module not listed fails the test: place it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("errors", "files", "devices", "arguments", "choices", "config", "cli_config")),
    (
        "pipeline",
        (
            "pipeline",
            "pipeline_steps",
            "pipeline_editing",
            "pipeline_parameterization",
            "pipeline_guidance",
            "pipeline_variance",
            "pipeline_superres",
        ),
    ),  # fmt: skip
    ("data", ("data", "labels")),
    (
        "models",
        (
            "models",
            "schedules",
            "loss",
            "likelihood",
            "safe_loading",
            "input_checks",
            "pipeline_ddpm_hub",
            "classifier",
            "assembly",
            "sampling",
            "export",
            "model_card",
            "hub",
        ),
    ),  # fmt: skip
    ("evaluation", ("evaluation",)),
    ("training", ("training", "train_step", "checkpointing", "run_folder", "defaults")),
    ("parts", ("latents", "improved_ddpm", "superres", "posthoc_ema")),
    ("commands", ("train", "prepare", "distill", "classifier_training", "cli", "app", "text2img")),
]
LEVEL = {name: level for level, (_, names) in enumerate(LAYERS) for name in names}
SHIPPED = {
    "pipeline", "pipeline_steps", "pipeline_editing", "pipeline_parameterization", "pipeline_guidance",
    "pipeline_variance", "pipeline_superres",
}  # fmt: skip


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ddpm_hub modules `name` imports, anywhere in its code, with the packages whose `__init__` they run."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            while target.count("."):  # the target and every package __init__ that importing it runs
                if target != name and not name.startswith(target + "."):
                    found.add(target)
                target = target.rpartition(".")[0]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items() if name != "ddpm_hub"}


def _level(module: str) -> int:
    top = module.split(".")[1]
    assert top in LEVEL, f"{module} is in no layer of tests/test_layers.py: declare where it belongs"
    return LEVEL[top]


def test_every_import_goes_to_the_same_or_a_lower_layer():
    upward = [
        f"{module} ({LAYERS[_level(module)][0]}) imports {target} ({LAYERS[_level(target)][0]})"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if _level(target) > _level(module)
    ]
    assert not upward, "imports from a lower layer up:\n" + "\n".join(upward)


def test_the_pipeline_files_import_nothing_of_ddpm_hub_but_each_other():
    graph = _graph()
    for name in SHIPPED:
        assert {target.split(".")[1] for target in graph[f"ddpm_hub.{name}"]} <= SHIPPED, name


def test_there_is_no_import_circle():
    graph, index, low, stack, on_stack, circles = _graph(), {}, {}, [], set(), []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


def test_the_named_choices_are_the_implementations_own():
    from ddpm_hub import choices, likelihood, models, pipeline_parameterization, pipeline_steps
    from ddpm_hub.data import images

    assert choices.SAMPLERS == tuple(pipeline_steps.SAMPLERS)
    assert choices.COMPILE_MODES == pipeline_steps.COMPILE_MODES
    assert choices.PRESETS == tuple(models.PRESETS)
    assert choices.BUILTIN_DATASETS == tuple(images.BUILTIN_DATASETS)
    assert choices.PREDICTION_TYPES == pipeline_parameterization.PREDICTION_TYPES
    assert choices.VARIANCE_TYPES == likelihood.VARIANCE_TYPES and choices.LOSS_TYPES == likelihood.LOSS_TYPES
