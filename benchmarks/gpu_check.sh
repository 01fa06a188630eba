#!/usr/bin/env bash
# The GPU figures in one command (issue 19): the `gpu`-marked tests, training throughput of ddpm-64 (64x64, batch
# 64, bf16: eager, compiled with reduce-overhead, and the re-created diffusers loop) and sampling throughput
# (DDIM-50 and DPM-Solver++(2M)-20 at batch 64: ours eager, ours compiled, diffusers' pipelines). Writes
# gpu_check.json and gpu_check.md to $OUT when set, else to the folder it names, and prints the table.
#
#   bash benchmarks/gpu_check.sh                    # one NVIDIA GPU, ddpm-hub installed (pip install -e ".[test]")
#   bash benchmarks/gpu_check.sh --wheels .whl      # first install the wheels in .whl (see benchmarks/README.md)
#   bash benchmarks/gpu_check.sh --smoke            # the same code paths on the CPU, tiny model, in minutes
#
# Sized for one 8-minute call on an H100/H200: each measurement is a few dozen steps or calls, medians over
# intervals; one compiler cache is shared by the compiled training runs and one by the sampling runs.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
wheels=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --wheels) wheels="$2"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: error: unknown argument '$1' (use --smoke, --wheels DIR)" >&2; exit 2 ;;
    esac
    shift
done

out="${OUT:-benchmarks/gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
echo "gpu_check: writing to $out"
python=${PYTHON:-python3}
if [[ -n "$wheels" ]]; then  # a machine without internet access: the missing packages, carried as wheels
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site "$wheels"/*.whl
    export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cache="$(mktemp -d)"  # compiler caches: cold at the start, shared by the runs of one kind
start=$SECONDS

if [[ $smoke == 1 ]]; then
    device=(--device cpu)
    train=(--model tiny --resolution 16 --train_batch_size 8 --dataset_name shapes --mixed_precision no
           --compile_backend eager --steps 6 --logging_steps 2)
    sample=(--model tiny --resolution 16 --batch_size 4 --dtype fp32 --compile_backend eager --repeats 2
            --runs ddim:5 dpmpp_2m:5)
    tests=(-m gpu tests/test_pipeline.py)  # collected and skipped without CUDA: the command itself is checked
else
    if ! "$python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
        echo "gpu_check.sh: error: no CUDA device visible to torch (use --smoke on a CPU)" >&2
        exit 2
    fi
    device=(--device cuda)
    train=(--model ddpm-64 --resolution 64 --train_batch_size 64 --dataset_name twemoji --mixed_precision bf16
           --allow_tf32 --steps 120 --logging_steps 20)
    sample=(--model ddpm-64 --resolution 64 --batch_size 64 --dtype bf16 --allow_tf32 --repeats 3
            --runs ddim:50 dpmpp_2m:20)
    tests=(-m gpu tests/test_pipeline.py tests/test_text2img.py tests/test_train.py)
fi

# 1. The gpu-marked tests (a failure is reported in the table, and the measurements still run).
set +e
"$python" -m pytest -q -p no:cacheprovider "${tests[@]}" --junitxml="$out/gpu_tests.xml" 2>&1 | tee "$out/gpu_tests.log"
set -e
# 2. Training: eager and compiled (reduce-overhead) through train_unconditional.py's code, then the diffusers loop.
"$python" benchmarks/train_throughput.py "${train[@]}" --modes eager reduce-overhead --baseline \
    --compile_cache_dir "$cache/train" --output "$out/train.json" >"$out/train.log" 2>&1 \
    || { tail -n 30 "$out/train.log" >&2; exit 1; }
# 3. Sampling: ours eager and compiled, diffusers' pipelines eager and on the compiled UNet.
TORCHINDUCTOR_CACHE_DIR="$cache/sample" "$python" benchmarks/sample_throughput.py "${sample[@]}" "${device[@]}" --output "$out/sample.json" >"$out/sample.log" 2>&1 \
    || { tail -n 30 "$out/sample.log" >&2; exit 1; }
# 4. One JSON, one Markdown table.
"$python" benchmarks/gpu_report.py "$out" --smoke "$smoke" --seconds $((SECONDS - start))
rm -rf "$cache"
