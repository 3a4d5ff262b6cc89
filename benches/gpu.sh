#!/usr/bin/env bash
# One short benchmark script for a lent GPU machine (no Rust toolchain, no network there), in one
# run of a few minutes:
# 1. BYOL's training step on ResNet-18 (CIFAR stem, the papers' heads), images/s, in PyTorch
#    CUDA (benches/reference/train_step_torch.py) and in each GPU variant of selfsup carried:
#      wgpu   - `--features wgpu`: wgpu with burn's fusion and autotune, WGSL kernels;
#      vulkan - `--features vulkan`: wgpu on Vulkan with cubecl's SPIR-V compiler (cooperative
#               matrices / tensor cores on NVIDIA), fusion and autotune;
#      cuda   - `--features cuda` (fusion and autotune), where such a binary could be built.
#    The first step of each includes autotune's measurements, fusion's search and every kernel's
#    compilation (one untimed warm-up step, then the median of STEPS): on an H200, 107 s for
#    wgpu, and over 150 s for vulkan with the driver's shader cache cold (BENCHMARKS.md);
# 2. the 224-pixel photograph pipeline (`photos` bench binary) on 1, 2, 4, ... threads up to the
#    machine's cores: the images per second a loader on that many cores delivers, decode included;
#    and PIL + torchvision's pair on one core beside it;
#    With the wgpu binary also `wgpu_matmul`: the same step with every convolution's forward pass
#    as one matrix product (`conv::set_conv_by_matmul`);
# 3. with SELFSUP_GPU_PROFILE=1, the wgpu and wgpu_matmul steps again under cubecl's profiler:
#    time per kernel (benches/gpu_kernels.awk), into $LOGS/wgpu_kernels.txt and
#    $LOGS/wgpu_matmul_kernels.txt.
#
# Build here, strip, compress with xz (the wgpu bench binary is 81 MB stripped, 12 MB as .xz; a
# device run carries 64 MiB at most), and carry target/gpu; this script unpacks `*.xz` itself:
#   cargo bench --bench train_step --bench photos --features wgpu,autotune-cache --no-run
#                              # -> target/gpu/train_step_wgpu, target/gpu/photos
#   cargo bench --bench train_step --features vulkan,autotune-cache --no-run
#                              # -> target/gpu/train_step_vulkan
#   (`autotune-cache`: the profile runs below reuse the first runs' autotune choices)
#   (and, if `--features cuda` builds, target/gpu/train_step_cuda); strip target/gpu/*;
#   xz -T0 target/gpu/train_step_* target/gpu/photos; cp ../shared/data/photos/* target/gpu/photos_data/
# On the GPU machine:  benches/gpu.sh [WIDTH] [BATCH] [STEPS]   (logs in $SELFSUP_GPU_LOGS or $OUT)
# The lent machines have no Vulkan loader: carry Debian's libvulkan1 (and libglvnd's libraries)
# as .deb files and unpack them first (`dpkg -x` each into /, then `ldconfig`); the workplace's
# device notes say how to fetch them.
# SELFSUP_GPU_SKIP="vulkan photos ..." leaves out those parts (wgpu, vulkan, cuda, wgpu_matmul,
# photos).
# On a CPU machine, for a small dry run:  SELFSUP_GPU_DRY=1 benches/gpu.sh 8 16 2
set -uo pipefail
cd "$(dirname "$0")/.."
WIDTH=${1:-64}
BATCH=${2:-256}
STEPS=${3:-10}
BIN=${SELFSUP_GPU_BIN:-target/gpu}
PY=${SELFSUP_PYTHON:-python3}
LOGS=${SELFSUP_GPU_LOGS:-${OUT:-/tmp}}
mkdir -p "$LOGS"
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core)" || true
for packed in "$BIN"/*.xz; do
    [ -f "$packed" ] || continue
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$packed" "${packed%.xz}" && chmod +x "${packed%.xz}"
done
# The NVIDIA driver's Vulkan ICD sits outside the loader's search path on the lent machines.
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then
    export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd
fi

# Runs a command under a time limit, its whole output to $LOGS/$1.log, the result lines here.
measure() {
    local name=$1 limit=$2
    shift 2
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    grep -E "images/s|images per CPU|skipped|Error" "$LOGS/$name.log"
    if [ $rc -ne 0 ]; then
        echo "$name: exit status $rc (124: over ${limit} s); last lines:"
        tail -n 4 "$LOGS/$name.log"
    fi
}

dev=cuda
[ -n "${SELFSUP_GPU_DRY:-}" ] && dev=cpu
echo "== BYOL, ResNet-18 width $WIDTH, batch $BATCH, $STEPS steps"
measure torch 60 "$PY" benches/reference/train_step_torch.py --device $dev --width "$WIDTH" \
    --batch "$BATCH" --steps "$STEPS"
measure torch_fp32 60 "$PY" benches/reference/train_step_torch.py --device $dev --width "$WIDTH" \
    --batch "$BATCH" --steps "$STEPS" --no-tf32
# selfsup's step on one backend: step NAME BACKEND STEPS [VARIABLE=VALUE...] (a dry run: the CPU).
step() {
    local name=$1 backend=$2 steps=$3 device=$2
    shift 3
    [ -n "${SELFSUP_GPU_DRY:-}" ] && device=cpu
    measure "$name" 240 env "$@" SELFSUP_BENCH_DEVICE=$device SELFSUP_BENCH_WIDTH="$WIDTH" \
        SELFSUP_BENCH_BATCH="$BATCH" SELFSUP_BENCH_STEPS="$steps" "$BIN/train_step_$backend" --bench
}
skipped() { [[ " ${SELFSUP_GPU_SKIP:-} " == *" $1 "* ]]; }
for backend in wgpu vulkan cuda; do
    if skipped "$backend"; then
        echo "selfsup $backend: skipped (SELFSUP_GPU_SKIP)"
    elif [ -x "$BIN/train_step_$backend" ]; then
        step "$backend" "$backend" "$STEPS"
    else
        echo "selfsup $backend: no binary at $BIN/train_step_$backend"
    fi
done
# The convolutions' forward passes as one matrix product over shifted views (burn's tiled matmul
# kernels) instead of burn's direct convolution kernel, their gradients burn's own:
# `conv::set_conv_by_matmul`.
if [ -x "$BIN/train_step_wgpu" ] && ! skipped wgpu_matmul; then
    echo "-- wgpu, convolutions as matrix products"
    step wgpu_matmul wgpu "$STEPS" SELFSUP_BENCH_CONV_MATMUL=1
fi

# SELFSUP_GPU_PROFILE=1: where the wgpu step's time goes, per kernel (cubecl's profiler times
# every launch, so these runs are slower than the ones above). Autotune's results are kept in
# target/environment by the runs above, so these runs measure no candidates; any trial that
# remains is left out (benches/gpu_kernels.awk). The sums cover the warm-up step and 5 steps.
if [ -n "${SELFSUP_GPU_PROFILE:-}" ] && [ -x "$BIN/train_step_wgpu" ]; then
    for variant in wgpu wgpu_matmul; do
        skipped "$variant" && continue
        echo "== per-kernel profile, $variant, 5 steps"
        raw=$(mktemp)
        matmul=0
        [ "$variant" = wgpu_matmul ] && matmul=1
        step "${variant}_profile" wgpu 5 CUBECL_DEBUG_OPTION=profile CUBECL_DEBUG_LOG="$raw" \
            SELFSUP_BENCH_CONV_MATMUL=$matmul
        awk -f benches/gpu_kernels.awk "$raw" | sort -rn >"$LOGS/${variant}_kernels.txt"
        head -n 25 "$LOGS/${variant}_kernels.txt"
        rm -f "$raw"
    done
fi

if [ -x "$BIN/photos" ] && [ -d "$BIN/photos_data" ] && ! skipped photos; then
    echo "== 224-pixel photograph pipeline"
    counts=2
    n=4
    while [ "$n" -le "$(nproc)" ]; do
        counts="$counts,$n"
        n=$((n * 2))
    done
    measure photos 90 env SELFSUP_PHOTOS_DIR="$BIN/photos_data" SELFSUP_PHOTO_REPEAT=150 \
        SELFSUP_PHOTO_THREADS="$counts" "$BIN/photos"
    measure photos_pil 90 env SELFSUP_BENCH_REPEATS=3 "$PY" benches/reference/photos_torchvision.py \
        "$BIN/photos_data"
fi
# Autotune's choices on this device, for a later run to carry (`target/environment`; one archive,
# since a device run brings back a limited number of files).
[ -d target/environment ] && tar -czf "$LOGS/environment.tar.gz" target/environment
date -u
