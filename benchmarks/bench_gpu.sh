#!/usr/bin/env bash
# dnas's GPU paths end to end on a machine with one CUDA GPU, from the command line as a user runs
# them: the GPU-marked tests, `dnas profile` (timings and peak memory against the predicted),
# `dnas train` with bf16 autocast on and off, and a search with two workers sharing the GPU.
# Each step's output lands in OUT (default reports/gpu); Fashion-MNIST must be installed (README).
#
#   bash benchmarks/bench_gpu.sh [OUT]
set -u
out=${1:-reports/gpu}
mkdir -p "$out"
py=${PYTHON:-python}
dnas=("$py" -m dnas_cli.main)
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, time it
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: rc $rc, $((SECONDS - t0)) s" | tee -a "$out/steps.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$out/gpu.txt"
"$py" -c "import torch; print(torch.__version__, torch.version.cuda)" >>"$out/gpu.txt"

step tests-gpu 120 "$py" -m pytest -q -p no:cacheprovider -m gpu tests/
step profile-bc100 120 "${dnas[@]}" profile densenet-bc-100 --device cuda --json
step profile-wrn 120 "${dnas[@]}" profile wrn-28-10 --device cuda --json
# one epoch on 20,000 images: bf16 autocast (the CUDA default) against fp32
for amp in amp no-amp; do
    step "train-bc100-$amp" 150 "${dnas[@]}" train densenet-bc-100 --dataset fashion-mnist \
        --recipe fast --epochs 1 --train-subset 20000 --val-size 2000 --device cuda --"$amp" \
        --out "studies/gpu-bc100-$amp" --no-resume --json
done
# the demo's search (README), two workers on the one GPU, 3 minutes instead of 8
step search 260 "${dnas[@]}" search --budget 1M-params --budget 20M-flops --dataset fashion-mnist \
    --train-subset 20000 --val-size 2000 --epochs 3 --workers 2 --timeout 3m --device cuda \
    --study gpu-demo --reports-dir "$out" --json
step tests-all 300 "$py" -m pytest -q -p no:cacheprovider -n 8 tests/
