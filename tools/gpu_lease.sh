#!/usr/bin/env bash
# One lease of a datacenter GPU, prepared here and run there in one call, with
# every step under its own time limit so that the whole ends inside BUDGET
# seconds and what it measured always comes back:
#   1. the GPU test binaries in CARRY/bins.tar.xz (conv_kernels first: the
#      tensor-core kernel's checks), each `--test-threads 8`;
#   2. tools/gpu_bench.sh (f32 and f16, tweedie beside PyTorch);
#   3. the 100-image eval rows that take hours on lavapipe (EVALS below), in order,
#      while time is left;
#   4. the SMC table against exact posteriors, particles 100 / 1000 / 10000.
# Results, at most 8 files as the device tool returns them: OUT/log.txt (every
# step's time and outcome), OUT/tests.txt, OUT/smc_table.txt, OUT/bench.tgz (gpu_bench's folder),
# OUT/evals.tgz (each run's results.json / results.md / report, no pictures
# but compare's grids), OUT/info.txt.
#
#   tools/gpu_lease.sh CARRY OUT [BUDGET_S] [LIMIT]
#
# The machine needs the Vulkan loader and glvnd carried (.gl/*.deb, unpacked with
# `dpkg -x` before this script): libvulkan1 alone found the NVIDIA driver but
# could not create an instance ("Could not get 'vkCreateInstance' ... for ICD
# libGLX_nvidia.so.0"); with libglvnd0, libgl1, libglx0, libegl1, libopengl0 and
# libgles2 beside it the H200 ran.
#
# CARRY holds bins.tar.xz (bin/tweedie and bin/tests/<name>-<hash>), made here by
#   cargo build --release && cargo test --release --no-run --test conv_kernels ...
#   tools/gpu_lease.sh --pack CARRY conv_kernels ... LIMIT (default 100) shrinks every eval to its first N images and
# BENCH_ARGS (environment) is passed to gpu_bench.sh, for a dry run on lavapipe:
#   DRY_STEPS=2 SMC_PARTICLES=10 BENCH_ARGS="--image-size 32 --iters 1 --no-tune" tools/gpu_lease.sh gpu-carry /tmp/dry 300 2
set -uo pipefail
if [ "${1:-}" = --pack ]; then
    # tools/gpu_lease.sh --pack CARRY TEST...: the release binary and the named
    # test binaries (built: cargo build --release; cargo test --release --no-run
    # --test TEST ...), stripped, in CARRY/bins.tar.xz, with the source path the
    # tests were built in (their fixtures are found through it).
    CARRY=${2:?CARRY folder}
    shift 2
    S=$(mktemp -d)
    mkdir -p "$S/bin/tests" "$CARRY"
    cp target/release/tweedie "$S/bin/"
    for t in "$@"; do
        f=$(ls -t target/release/deps/"$t"-* | grep -v '\.d$' | head -1)
        [ -n "$f" ] || { echo "no built test binary $t" >&2; exit 1; }
        cp "$f" "$S/bin/tests/"
    done
    strip "$S"/bin/tweedie "$S"/bin/tests/*
    pwd > "$S/bin/root.txt"
    tar -cJf "$CARRY/bins.tar.xz" -C "$S" bin
    rm -rf "$S"
    ls -la "$CARRY"
    exit 0
fi
CARRY=${1:?CARRY folder}
OUT=${2:?OUT folder}
BUDGET=${3:-420}
LIMIT=${4:-100}
T0=$SECONDS
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
left() { echo $((BUDGET - (SECONDS - T0))); }
log() { echo "[$((SECONDS - T0)) s] $*" | tee -a "$OUT/log.txt"; }
# The smaller of a step's own limit and the time left, less a reserve for packing.
limit() {
    local l=$(($(left) - 15))
    [ "$1" -lt "$l" ] && l=$1
    echo $l
}

tar -xJf "$CARRY/bins.tar.xz" -C "$WORK" || { log "cannot unpack $CARRY/bins.tar.xz"; exit 1; }
BIN=$WORK/bin/tweedie
{
    "$BIN" info 2>&1
    command -v nvidia-smi > /dev/null && nvidia-smi 2>&1
} > "$OUT/info.txt"
if ! grep -qi 'chosen.*nvidia' "$OUT/info.txt"; then
    # The loader did not find NVIDIA's driver by itself: its manifest where one
    # exists, else one written for the driver library (libGLX_nvidia holds the
    # Vulkan ICD) wherever the driver's libraries are mounted.
    ICD=$(find /usr/local/nvidia /usr/share/vulkan /etc/vulkan /usr/lib -name 'nvidia_icd*.json' 2> /dev/null | head -1)
    LIB=$(find /usr/local/nvidia /usr/lib /usr/lib64 -name 'libGLX_nvidia.so.0' 2> /dev/null | head -1)
    {
        echo "== no NVIDIA adapter at first; manifest: ${ICD:-none}, driver library: ${LIB:-none}"
        find / -xdev \( -name 'nvidia_icd*.json' -o -name 'libGLX_nvidia.so*' -o -name 'libnvidia-glvkspirv*' \) 2> /dev/null | head
    } >> "$OUT/info.txt"
    if [ -z "$ICD" ] && [ -n "$LIB" ]; then
        ICD=$WORK/nvidia_icd.json
        echo '{"file_format_version": "1.0.1", "ICD": {"library_path": "'"$LIB"'", "api_version": "1.3.0"}}' > "$ICD"
    fi
    [ -n "$LIB" ] && export LD_LIBRARY_PATH="$(dirname "$LIB")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    [ -n "$ICD" ] && export VK_DRIVER_FILES=$ICD
    VK_LOADER_DEBUG=error,warn "$BIN" info >> "$OUT/info.txt" 2>&1
    grep -qi 'chosen.*nvidia' "$OUT/info.txt" || { log "no NVIDIA adapter: $(tail -c 600 "$OUT/info.txt")"; exit 1; }
fi
log "adapter: $(grep -i 'chosen' "$OUT/info.txt" | tail -1)"

# 1. Tests. Fixtures are found through the path baked in at build time
# (CARGO_MANIFEST_DIR), so that path is made to point here.
BAKED=$(cat "$WORK/bin/root.txt")
if [ "$BAKED" != "$PWD" ] && [ ! -e "$BAKED/Cargo.toml" ]; then
    mkdir -p "$(dirname "$BAKED")" && ln -sfn "$PWD" "$BAKED"
fi
export TWEEDIE_REQUIRE_COOP=1
for t in conv_kernels $(ls "$WORK/bin/tests" | sed 's/-[0-9a-f]*$//' | grep -v '^conv_kernels$\|^smc_spectral$'); do
    tb=$(ls "$WORK"/bin/tests/"$t"-* | head -1)
    l=$(limit "$([ "$t" = conv_kernels ] && echo 120 || echo 60)")
    [ "$l" -lt 20 ] && { log "tests $t: skipped, no time left"; continue; }
    timeout "$l" "$tb" --test-threads 8 > "$WORK/t.txt" 2>&1
    rc=$?
    { echo "== $t (exit $rc)"; cat "$WORK/t.txt"; } >> "$OUT/tests.txt"
    log "tests $t: exit $rc, $(grep -E '^test result' "$WORK/t.txt" | tail -1)"
done
unset TWEEDIE_REQUIRE_COOP

# 2. The benchmark, tweedie beside PyTorch. Measured on the H200 (2026-12-04): at
# 256x256 an f32 forward takes 0.9 s and an f16 one 85 ms, so 20 replays of every
# f32 row need over a minute; the first lease's 60 s limits cut f32 off, and a
# 10-method compare of 100 images at 20 steps took about 65 s.
l=$(limit 400)
[ "$l" -lt 20 ] && l=20
TUNE_S=${TUNE_S:-90} BENCH_S=${BENCH_S:-150} TORCH_S=${TORCH_S:-90} timeout "$l" bash tools/gpu_bench.sh --bin "$BIN" --out "$WORK/gpu-bench" \
    --no-checks ${BENCH_ARGS:-} > "$WORK/bench.log" 2>&1
rc=$?
cp "$WORK/bench.log" "$WORK/gpu-bench/" 2> /dev/null
log "gpu_bench: exit $rc; $(tail -c 300 "$WORK/bench.log" | tr '\n' ' ')"
tar -czf "$OUT/bench.tgz" -C "$WORK" gpu-bench 2> /dev/null

# 3. Eval rows, most wanted first. name|limit seconds|arguments
IMAGES=weights/fashion-mnist-32/test-images
ALL=dps,dmps,cdps,ald,reddiff,ddnm,ddrm,pigdm,diffpir,daps
GRAD=dps,reddiff,daps
EVALS=(
    "cmp-box-20|120|compare --task inpaint-box --box 12 --methods $ALL --steps 20 --batch 100"
    "cmp-sr-20|120|compare --task sr --factor 2 --methods $ALL --steps 20 --batch 100"
    "cmp-deblur-20|120|compare --task deblur-gaussian --methods $ALL --steps 20 --batch 100"
    "cmp-box-100|240|compare --task inpaint-box --box 12 --methods $ALL --steps 100 --batch 100"
    "cmp-sr-100|240|compare --task sr --factor 2 --methods $ALL --steps 100 --batch 100"
    "cmp-deblur-100|240|compare --task deblur-gaussian --methods $ALL --steps 100 --batch 100"
    "cmp-phase-100|60|compare --task phase-retrieval --methods $GRAD --steps 100 --batch 100"
    "cmp-jpeg-100|60|compare --task jpeg --quality 10 --methods $GRAD --steps 100 --batch 100"
    "smc-spectral-sr|60|eval --task sr --factor 2 --method smc --samples 8 --steps 20 --batch 100"
    "smc-tds-sr|60|eval --task sr --factor 2 --method smc --smc-variant tds --samples 8 --steps 20 --batch 100"
    "smc-spectral-box|60|eval --task inpaint-box --box 12 --method smc --samples 8 --steps 20 --batch 100"
    "smc-pops-sr-100|60|eval --task sr --factor 2 --method smc --samples 8 --particles 2 --steps 100 --batch 100"
    "smc-pops-box-100|60|eval --task inpaint-box --box 12 --method smc --samples 8 --particles 2 --steps 100 --batch 100"
    "dps-phase-best4|60|eval --task phase-retrieval --method dps --steps 100 --best-of 4 --batch 100"
    "smc-phase|60|eval --task phase-retrieval --method smc --samples 8 --steps 100 --batch 100"
    "dps-poisson|60|eval --task denoise --noise poisson --poisson-rate 1 --method dps --steps 100 --batch 100"
    "cmp-box-1000|120|compare --task inpaint-box --box 12 --methods $ALL --steps 1000 --batch 100"
    "cmp-sr-1000|120|compare --task sr --factor 2 --methods $ALL --steps 1000 --batch 100"
)
R=$WORK/evals
mkdir -p "$R"
for e in "${EVALS[@]}"; do
    IFS='|' read -r name lim args <<< "$e"
    # DRY_STEPS (environment): every run at that many steps, for a dry run.
    [ -n "${DRY_STEPS:-}" ] && args=$(sed -E "s/--steps [0-9]+/--steps $DRY_STEPS/" <<< "$args")
    l=$(limit "$lim")
    [ "$l" -lt 20 ] && { log "eval $name: skipped, no time left"; continue; }
    # shellcheck disable=SC2086
    timeout "$l" "$BIN" $args --input "$IMAGES" --limit "$LIMIT" --quiet --out "$R/$name" > "$R/$name.log" 2>&1
    rc=$?
    log "eval $name: exit $rc, $(tail -1 "$R/$name.log" | cut -c1-200)"
done
# 4. The SMC particle table (tests/smc_spectral.rs, tds_twist_table), one line per
# run as it finishes, cheapest problems first.
tb=$(ls "$WORK"/bin/tests/smc_spectral-* 2> /dev/null | head -1)
for table in fixtures "20,1,31" "800,1,32" "800,8,33"; do
    [ -n "$tb" ] || break
    l=$(limit 150)
    [ "$l" -lt 20 ] && { log "smc table $table: skipped, no time left"; continue; }
    TWEEDIE_TABLE=$table TWEEDIE_PARTICLES=${SMC_PARTICLES:-100,1000,10000} TWEEDIE_VARIANTS=spectral,tds/operator \
        timeout "$l" "$tb" --ignored --exact tds_twist_table --nocapture >> "$OUT/smc_table.txt" 2>&1
    log "smc table $table: exit $?, $(grep -c 'gap closed' "$OUT/smc_table.txt") rows so far"
done

(cd "$R" && find . -name '*.json' -o -name '*.md' -o -name '*.log' -o -name 'grid.png' -o -name 'tradeoff.png' |
    tar -czf "$OUT/evals.tgz" -T -)
log "done: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK"
