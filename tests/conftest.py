"""Shared fixtures: tiny seeded models, saved pipelines, and subprocess runners with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Tests never touch the real Hub or the user's caches: an isolated HF_HOME, offline unless a test starts the
# local Hub server and passes its own environment to a subprocess. Set before anything imports huggingface_hub.
_HF_HOME = tempfile.mkdtemp(prefix="ddpm-hub-tests-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist every worker is a process of its own: N workers x torch's default of one thread per core
# would oversubscribe the cores N times over. Each worker, and every subprocess it starts, uses one thread.
UNDER_XDIST = "PYTEST_XDIST_WORKER" in os.environ
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
if UNDER_XDIST:
    os.environ.update(ONE_THREAD)  # subprocesses started with os.environ (the Hub client env) inherit it

# Every subprocess a test waits for gets this long: minutes of room on a loaded 2-core machine, where a run that
# takes 17 s alone has taken over 300 s. pytest-timeout (pyproject.toml) is above it, so this fires first.
SUBPROCESS_TIMEOUT = 900

import pytest  # noqa: E402
import torch  # noqa: E402

if UNDER_XDIST:
    torch.set_num_threads(1)

# Local Hub for the Hub tests: `hub_server` fixture; pass `hub_server.client_env(...)` to client subprocesses.
from hub_server import HubServer, hub_server  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parents[1]

# A few milliseconds per forward pass on a CPU: 16 px, two levels, attention at 8 px.
TINY_UNET = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)


def make_tiny_pipeline(seed: int = 0, **scheduler_kwargs):
    from diffusers import UNet2DModel

    from ddpm_hub import DDPMHubPipeline, make_noise_scheduler

    torch.manual_seed(seed)
    unet = UNet2DModel(**TINY_UNET).eval()
    pipe = DDPMHubPipeline(unet=unet, scheduler=make_noise_scheduler(**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def tiny_pipeline():
    return make_tiny_pipeline()


@pytest.fixture(scope="session")
def saved_pipeline_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pipeline") / "tiny-ddpm"
    make_tiny_pipeline().save_pretrained(path)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: this one minus anything pointing at a real Hub or GPU, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "ACCELERATE_", "WANDB"))}
    env.update(
        HF_HOME=_HF_HOME,
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONUNBUFFERED="1",
        WANDB_MODE="disabled",
    )
    if UNDER_XDIST:
        env.update(ONE_THREAD)
    env.update(extra)
    return env


# Makes `import ddpm_hub` fail, as on the machine of someone who never installed it.
WITHOUT_DDPM_HUB = "import sys; sys.modules['ddpm_hub'] = None\n"


def run_python(
    code: str, *, without_ddpm_hub: bool = False, env: dict | None = None, cwd=None, timeout=SUBPROCESS_TIMEOUT
):
    """Run `code` in a fresh isolated interpreter (`-I`: no cwd, no PYTHONPATH on sys.path)."""
    if without_ddpm_hub:
        code = WITHOUT_DDPM_HUB + code
    result = subprocess.run(
        [sys.executable, "-I", "-c", code],
        env=env or clean_env(),
        cwd=cwd or tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
