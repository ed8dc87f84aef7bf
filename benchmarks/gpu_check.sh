#!/usr/bin/env bash
# The GPU check of issue 13, for a machine with one CUDA GPU (at most 8 minutes: the steps' time limits):
#   1. the tests that run on CUDA when it is there (the "cuda" cases of the files that ask cuda.is_available);
#   2. benchmarks/norm_speed.py on CUDA, bf16 autocast + channels_last: eager and compiled ratios against
#      nn.GroupNorm and against timm's layers (plus one float32 eager table);
#   3. benchmarks/train_throughput.py on CUDA, bf16 + channels_last: unified vs native layers, then eager vs
#      compile: true with the break-even.
# Each step's output goes to $OUT/<step>.txt ($OUT, else ./gpu_check_results); a failing step does not stop
# the others, and the exit status is the number of failed steps.
# Usage: bash benchmarks/gpu_check.sh [--smoke]   (--smoke: the same steps on the CPU at tiny sizes, to check
# the script itself; no CUDA needed). PYTHON picks the interpreter (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_results}"
py="${PYTHON:-python}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${1:-}" == "--smoke" ]]; then
    device=cpu
    speed=(--shape 4 32 8 8 --repeats 3 --presets gn evonorm_s0 pn:act=tlu)
    train=(--model cnn --depth 3 --width 32 --resolution 8 --steps 6 --repeats 1)
    compile_specs=(evonorm_s0)
    test_filter="cpu"
else
    device=cuda
    speed=(--shape 128 256 56 56 --repeats 21 --threads 0 --presets gn bgn frn evonorm_s0 evonorm_b0 pn:act=tlu)
    train=(--depth 14 --width 32 --resolution 32 --steps 60 --repeats 2 --threads 0)
    compile_specs=(evonorm_s0 gn)
    test_filter="cuda"
fi

failed=0
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, output to the terminal and $out/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" | tee "$out/$name.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc" | tee -a "$out/$name.txt"
    [[ $rc -eq 0 ]] || failed=$((failed + 1))
}

step environment 30 "$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
mapfile -t cuda_tests < <(grep -l "cuda.is_available" tests/test_*.py)
step cuda_tests 90 "$py" -m pytest "${cuda_tests[@]}" -q -p no:cacheprovider -k "$test_filter"
step norm_speed_bf16_cl 150 "$py" benchmarks/norm_speed.py --device "$device" --amp --channels-last "${speed[@]}"
step norm_speed_fp32_eager 30 "$py" benchmarks/norm_speed.py --device "$device" --no-compile --no-timm "${speed[@]}"
step train_native 60 "$py" benchmarks/train_throughput.py --device "$device" --amp --channels-last "${train[@]}"
step train_compile 120 "$py" benchmarks/train_throughput.py --mode compile --specs "${compile_specs[@]}" \
    --device "$device" --amp --channels-last "${train[@]}"
echo "gpu_check: $failed step(s) failed; results in $out"
exit "$failed"
