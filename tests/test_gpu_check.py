"""benchmarks/gpu_check.sh --smoke: the GPU check's code paths on the CPU, so that the script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, clean_env

SCRIPT = str(REPO_ROOT / "benchmarks" / "gpu_check.sh")


def gpu_check(*args: str, out) -> subprocess.CompletedProcess:
    env = clean_env(OUT=str(out), PYTHON=sys.executable)
    return subprocess.run(
        ["bash", SCRIPT, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )


def test_smoke_run_writes_the_json_and_the_table(tmp_path):
    result = gpu_check("--smoke", out=tmp_path)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["smoke"] is True and summary["seconds"] >= 0
    # The gpu-marked tests were collected and skipped (no CUDA here), not silently left out.
    assert summary["gpu_tests"]["skipped"] >= 1 and summary["gpu_tests"]["failed"] == 0
    rows = {row["name"]: row for row in summary["rows"]}
    expected = ["train eager", "train compiled (reduce-overhead)", "train diffusers loop (re-created)"]
    for run in ("ddim-5", "dpmpp_2m-5"):
        expected += [
            f"sample {run} {variant}" for variant in ("ours eager", "ours compiled", "diffusers", "diffusers compiled")
        ]
    assert list(rows) == expected + [name for name in rows if name not in expected]  # these first, in this order
    assert all(rows[name]["images_per_second"] > 0 for name in expected)
    assert rows["train compiled (reduce-overhead)"]["compile_seconds"] > 0
    assert rows["sample ddim-5 ours compiled"]["vs_diffusers"] > 0
    assert summary["train"]["settings"]["compile_backend"] == "eager"  # traced by dynamo, no code generation
    table = (tmp_path / "gpu_check.md").read_text()
    assert "SMOKE RUN" in table and "| measurement | images/s | vs diffusers | compile s | peak GiB | target |" in table
    assert table.count("\n| ") == 2 + len(rows)  # header, rule, one line per measurement
    assert table in result.stdout  # printed as well
    for name in ("train.json", "sample.json", "gpu_tests.xml", "train.log", "sample.log"):
        assert (tmp_path / name).is_file(), name


def test_unknown_argument_exits_2(tmp_path):
    result = gpu_check("--fast", out=tmp_path)
    assert result.returncode == 2 and "unknown argument '--fast'" in result.stderr
    assert not (tmp_path / "gpu_check.json").exists()
