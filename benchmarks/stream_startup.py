"""Time to the first optimizer step and peak RSS, in-memory against streamed shards; loader images/s per worker.

    python benchmarks/stream_startup.py --sizes 1000 10000 --workdir /tmp/stream-bench --out stream.json
    python benchmarks/stream_startup.py --throughput_only --workdir /tmp/stream-bench

For each size N it draws N seeded 64 px PNGs into a folder (once), then runs the whole training command with
`--max_train_steps 1` and the tiny model, as a user would: in memory from the image folder (a cold and a warm
`datasets` cache), and streamed from shards written by `ddpm-hub prepare` (timed separately; it is done once per
data set). Wall time is the whole command (imports included); peak RSS is the child's `ru_maxrss`, workers are
counted separately by the kernel, so RSS is the training process itself. Loader throughput decodes, converts and
resizes in one process (what one DataLoader worker does), at 64 and 256 px.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = [
    sys.executable,
    str(REPO / "train_unconditional.py"),
    "--model",
    "tiny",
    "--resolution",
    "64",
    "--max_train_steps",
    "1",
    "--train_batch_size",
    "16",
    "--logger",
    "none",
    "--save_images_epochs",
    "1000",
    "--ddpm_num_inference_steps",
    "1",
    "--eval_batch_size",
    "1",
    "--overwrite_output_dir",
]


def make_images(folder: Path, count: int, size: int) -> None:
    from ddpm_hub.data import draw_shapes

    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, count, 500):
        for offset, image in enumerate(draw_shapes(min(500, count - start), size=size, seed=start)):
            image.save(folder / f"{start + offset:07d}.png")


_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
    "seconds = time.perf_counter() - start\n"
    "if code.returncode: sys.exit(code.stderr[-3000:])\n"
    "print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def timed(command: list[str]) -> dict:
    """Wall seconds and peak RSS (MB, the largest process of the command) of one command, in a fresh parent."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    seconds, peak_kb = result.stdout.split()
    return {"seconds": round(float(seconds), 1), "peak_rss_mb": round(int(peak_kb) / 1024)}


def startup(workdir: Path, count: int) -> dict:
    images, shards, cache = workdir / f"images-{count}", workdir / f"shards-{count}", workdir / f"cache-{count}"
    make_images(images, count, 64)
    row = {"images": count}
    in_memory = [
        *TRAIN,
        "--train_data_dir",
        str(images),
        "--cache_dir",
        str(cache),
        "--output_dir",
        str(workdir / "run"),
    ]
    row["in_memory_cold"] = _progress(count, "in_memory_cold", timed(in_memory))
    row["in_memory_warm"] = _progress(count, "in_memory_warm", timed(in_memory))
    prepare = [sys.executable, "-m", "ddpm_hub.cli", "prepare", str(images), str(shards), "--resolution", "64"]
    row["prepare"] = _progress(count, "prepare", timed(prepare))
    stream = [
        *TRAIN,
        "--train_shards",
        str(shards),
        "--dataloader_num_workers",
        "1",
        "--output_dir",
        str(workdir / "run"),
    ]
    row["streamed"] = _progress(count, "streamed", timed(stream))
    return row


def _progress(count: int, phase: str, result: dict) -> dict:
    """`result`, also printed to stderr at once, so that a long size still reports the phases it finished."""
    print(json.dumps({"images": count, phase: result}), file=sys.stderr, flush=True)
    return result


def throughput(workdir: Path, size: int, count: int = 400) -> float:
    """Images/s of one reader (one DataLoader worker): read, decode, convert, resize and crop."""
    from ddpm_hub.data.shards import resolve_shards
    from ddpm_hub.data.stream import ShardStream, open_webdataset

    images, shards = workdir / f"throughput-{size}", workdir / f"throughput-shards-{size}"
    make_images(images, count, size)
    if not (shards / "manifest.json").is_file():
        from ddpm_hub.prepare import main as prepare_main

        prepare_main([str(images), str(shards), "--resolution", "0", "--shard_size", str(count)])
    reader = open_webdataset(resolve_shards(str(shards)))
    stream = ShardStream(reader, resolution=64 if size == 64 else 256, shuffle_buffer_size=0)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        seen = sum(1 for _ in stream)
        rates.append(seen / (time.perf_counter() - start))
    return round(sorted(rates)[1], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stream-bench"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--throughput_only", action="store_true")
    args = parser.parse_args()
    results = {"throughput_images_per_s_per_worker": {f"{s}px": throughput(args.workdir, s) for s in (64, 256)}}
    print(json.dumps(results), flush=True)
    if not args.throughput_only:
        results["startup"] = []
        for count in args.sizes:
            results["startup"].append(startup(args.workdir, count))
            print(json.dumps(results["startup"][-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
