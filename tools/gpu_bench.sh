#!/usr/bin/env bash
# The datacenter-GPU run, in well under 10 minutes with no network: given the
# release binary (and, where the machine has no Vulkan loader of its own, the
# loader library beside it), writes every figure as JSON under one folder:
#   info-<precision>.json      tweedie info on DPS's FFHQ-256 configuration
#   tune-<precision>.jsonl     tweedie bench --tune: every candidate convolution kernel per
#                              layer shape, the heuristic's pick and the fastest (saved in
#                              tune.json, which the bench below then uses; --no-tune skips it)
#   tweedie-<precision>.jsonl  tweedie bench --model (layers, passes, steps)
#   torch-<precision>.jsonl    tools/bench_torch.py on the same shapes (when torch imports)
#   compare-<precision>.txt    tools/bench_compare.py of the two
#   device.txt                 the adapter list, nvidia-smi
#   checks.txt                 the cooperative-matrix kernel's checks, run before any timing
#                              (TWEEDIE_REQUIRE_COOP=1: an adapter without it fails them):
#                              the orientation canary (a 1x1 convolution by a permutation
#                              matrix, exact) and 20-run bit identity, from tests/conv_kernels.rs;
#                              a failure stops the run (--no-checks skips them)
#
#   tools/gpu_bench.sh [--bin target/release/tweedie] [--out gpu-bench] [--image-size 256] [--batch 1] [--iters 20] [--no-tune]
#                      [--checks target/release/deps/conv_kernels-HASH] [--no-checks]
#
# TUNE_S, BENCH_S, TORCH_S (environment; default 90, 240, 150) bound each precision's tuning,
# benchmark and PyTorch runs in seconds.
#
# --checks names the built test binary (`cargo test --release --test conv_kernels --no-run`
# prints it); without it the newest target/release/deps/conv_kernels-* is used, or cargo runs
# the tests.
set -euo pipefail
BIN=target/release/tweedie
OUT=gpu-bench
SIZE=256
BATCH=1
ITERS=20
CONFIG=configs/ffhq256-dps
TUNE=1
CHECKS=
RUN_CHECKS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --image-size) SIZE=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --iters) ITERS=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --no-tune) TUNE=0; shift ;;
        --checks) CHECKS=$2; shift 2 ;;
        --no-checks) RUN_CHECKS=0; shift ;;
        *) echo "gpu_bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
# The autotune cache of this run only (never the user's own).
export TWEEDIE_TUNE_CACHE="$(cd "$OUT" && pwd)/tune.json"
# A loader shipped beside the binary (libvulkan.so.1) is found first.
export LD_LIBRARY_PATH="$(cd "$(dirname "$BIN")" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
    "$BIN" info || true
    command -v nvidia-smi > /dev/null && nvidia-smi || true
} > "$OUT/device.txt" 2>&1
# The cooperative-matrix kernel must run here, and run right, before it is timed.
export TWEEDIE_REQUIRE_COOP=1
COOP_CHECKS=(coop_orientation_canary coop_runs_are_bit_identical)
if [ "$RUN_CHECKS" = 1 ]; then
    if [ -z "$CHECKS" ]; then
        CHECKS=$(ls -t target/release/deps/conv_kernels-* 2> /dev/null | grep -v '\.d$' | head -1 || true)
    fi
    if [ -n "$CHECKS" ]; then
        CHECK_CMD=("$CHECKS" --exact "${COOP_CHECKS[@]}")
    elif command -v cargo > /dev/null; then
        CHECK_CMD=(cargo test --release --test conv_kernels -- --exact "${COOP_CHECKS[@]}")
    else
        echo "gpu_bench.sh: no conv_kernels test binary (--checks) and no cargo to build one; --no-checks skips the checks" >&2
        exit 2
    fi
    if ! timeout 300 "${CHECK_CMD[@]}" > "$OUT/checks.txt" 2>&1; then
        echo "cooperative-matrix checks failed (see $OUT/checks.txt): $(grep -m1 -A1 -E 'panicked|error' "$OUT/checks.txt" | tr '\n' ' ' || tail -1 "$OUT/checks.txt")" >&2
        exit 1
    fi
    grep -E '^test result' "$OUT/checks.txt" || true
fi
TORCH_DEV=cpu
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null; then
    TORCH_DEV=cuda
fi
HAVE_TORCH=0
python3 -c "import torch" 2> /dev/null && HAVE_TORCH=1
for P in f32 f16; do
    TDT=float32
    [ "$P" = f16 ] && TDT=float16
    if ! "$BIN" info "$CONFIG" --image-size "$SIZE" --batch "$BATCH" --precision "$P" --json > "$OUT/info-$P.json" 2> "$OUT/info-$P.err"; then
        echo "info $P failed: $(tail -1 "$OUT/info-$P.err")"
        continue
    fi
    if [ "$TUNE" = 1 ]; then
        timeout "${TUNE_S:-90}" "$BIN" bench --model "$CONFIG" --image-size "$SIZE" --batch "$BATCH" --precision "$P" \
            --iters 5 --tune --json > "$OUT/tune-$P.jsonl" 2> "$OUT/tune-$P.err" || echo "tune $P: exit $?"
    fi
    timeout "${BENCH_S:-240}" "$BIN" bench --model "$CONFIG" --image-size "$SIZE" --batch "$BATCH" --precision "$P" \
        --iters "$ITERS" --json > "$OUT/tweedie-$P.jsonl" 2> "$OUT/tweedie-$P.err" || echo "bench $P: exit $?"
    if [ "$HAVE_TORCH" = 1 ]; then
        timeout "${TORCH_S:-150}" python3 tools/bench_torch.py --config "$CONFIG/config.json" --image-size "$SIZE" --batch "$BATCH" \
            --device "$TORCH_DEV" --dtype "$TDT" --iters "$ITERS" --shapes "$OUT/tweedie-$P.jsonl" --json \
            > "$OUT/torch-$P.jsonl" 2> "$OUT/torch-$P.err" || echo "torch $P: exit $?"
        python3 tools/bench_compare.py "$OUT/tweedie-$P.jsonl" "$OUT/torch-$P.jsonl" > "$OUT/compare-$P.txt" 2>&1 || true
    fi
done
ls -la "$OUT"
