"""gpu_check.sh's summary: one JSON and one Markdown table from the outputs of its steps, in the folder it wrote.

    python benchmarks/gpu_report.py OUT_DIR [--smoke 1] [--seconds 300]

Reads OUT_DIR/gpu_tests.xml (pytest's JUnit report), OUT_DIR/train.json (train_throughput.py) and
OUT_DIR/sample.json (sample_throughput.py); writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md and prints the
table. It measures nothing itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# Issue 19's targets for one H100 with ddpm-64 at 64x64, batch 64 (images/s unless named otherwise).
TARGETS = {
    "train eager": 650,
    "train compiled (reduce-overhead)": 1400,
    "sample ddim-50 ours compiled": 150,
    "sample dpmpp_2m-20 ours compiled": 350,
}
PEAK_MEMORY_TARGET_GB = 9.3
SAMPLE_VARIANTS = ("ours_eager", "ours_compiled", "diffusers", "diffusers_compiled")


def test_counts(report: Path) -> dict:
    """passed / failed / errors / skipped of a pytest JUnit report (all zero if pytest wrote none)."""
    if not report.is_file():
        return {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "report": "missing"}
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, failed, errors, skipped = (int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped"))
    return {"passed": tests - failed - errors - skipped, "failed": failed, "errors": errors, "skipped": skipped}


def rows(train: dict, sample: dict) -> list[dict]:
    """One row per measurement: name, images/s, ratio to diffusers, compile seconds, peak GPU memory."""
    baseline = train["baseline"]["images_per_second"]
    table = []
    for mode, label in (("eager", "train eager"), ("reduce-overhead", "train compiled (reduce-overhead)")):
        measured = train["ours"][mode]
        compile_seconds = measured.get("compile_seconds") or [None]
        table.append(
            {
                "name": label,
                "images_per_second": measured["images_per_second"],
                "vs_diffusers": measured["images_per_second"] / baseline,
                "compile_seconds": compile_seconds[0],
                "gpu_memory_gb": measured.get("gpu_memory_gb"),
            }
        )
    table.append(
        {
            "name": "train diffusers loop (re-created)",
            "images_per_second": baseline,
            "vs_diffusers": 1.0,
            "gpu_memory_gb": train["baseline"].get("gpu_memory_gb"),
        }
    )
    for run, variants in sample["results"].items():
        diffusers = variants.get("diffusers", {}).get("images_per_second")
        for variant in SAMPLE_VARIANTS:
            if variant in variants:
                measured = variants[variant]
                speed = measured["images_per_second"]
                table.append(
                    {
                        "name": f"sample {run} {variant.replace('_', ' ')}",
                        "images_per_second": speed,
                        "vs_diffusers": speed / diffusers if diffusers else None,
                        "compile_seconds": measured.get("compile_seconds"),
                        "gpu_memory_gb": measured.get("gpu_memory_gb"),
                    }
                )
    for row in table:
        if row["name"] in TARGETS:
            row["target"] = TARGETS[row["name"]]
            row["meets_target"] = row["images_per_second"] >= row["target"]
    return table


def markdown(summary: dict) -> str:
    def number(value, digits=1):
        return "" if value is None else f"{value:.{digits}f}"

    tests = summary["gpu_tests"]
    lines = [
        f"GPU check, {summary['date']}, {summary['device']}, torch {summary['torch']}"
        + (" (SMOKE RUN on the CPU: tiny model, figures mean nothing)" if summary["smoke"] else ""),
        "",
        f"gpu-marked tests: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
        f"{tests['skipped']} skipped; whole check {summary['seconds']} s",
        "",
        "| measurement | images/s | vs diffusers | compile s | peak GiB | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in summary["rows"]:
        target = ""
        if "target" in row and not summary["smoke"]:
            target = f">= {row['target']}: {'met' if row['meets_target'] else 'NOT met'}"
        ratio = "" if row["vs_diffusers"] is None else f"{row['vs_diffusers']:.2f}x"
        lines.append(
            f"| {row['name']} | {number(row['images_per_second'])} | {ratio} | "
            f"{number(row.get('compile_seconds'))} | {number(row.get('gpu_memory_gb'), 2)} | {target} |"
        )
    lines += [
        "",
        f"Targets (issue 19, one H100): peak training memory <= {PEAK_MEMORY_TARGET_GB} GiB; "
        "<= 60 s to the first fast compiled step with a warm cache (this check compiles cold).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--smoke", type=int, default=0)
    parser.add_argument("--seconds", type=int, default=None, help="Wall-clock seconds of the whole check.")
    args = parser.parse_args()
    train = json.loads((args.out / "train.json").read_text())
    sample = json.loads((args.out / "sample.json").read_text())
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": sample["device"] if sample["device"] != "cpu" else train["device"],
        "torch": sample["torch"],
        "diffusers": sample["diffusers"],
        "smoke": bool(args.smoke),
        "seconds": args.seconds,
        "gpu_tests": test_counts(args.out / "gpu_tests.xml"),
        "rows": rows(train, sample),
        "train": train,
        "sample": sample,
    }
    table = markdown(summary)
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
