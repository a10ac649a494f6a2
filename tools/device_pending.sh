#!/usr/bin/env bash
# docs/benchmarks.md's "Pending GPU work" as one device call: every step logs to $OUT/log.txt
# with its wall time, has its own time limit, and all of them share one deadline so the call ends
# inside the device tool's 10-minute limit with whatever finished. Prepare the carried data first
# (bash tools/prepare_device_carry.sh), then with the device tool:
#
#   run(command="bash tools/device_pending.sh", carry=["device-carry"], timeout_s=590)
#
# Files back in $OUT (at most 8): log.txt, kf.json, gen.json, pasadena.json, robust.json, min_norm.json,
# bench.tgz.
# SMOKE=1 DEVICE=cpu OUT=/tmp/out bash tools/device_pending.sh runs every step at toy sizes on a
# CPU, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$REPO/runs/device_out}
CARRY=${CARRY:-$REPO/device-carry}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
BUDGET=${BUDGET:-560}  # seconds for all steps together
mkdir -p "$OUT"
LOG=$OUT/log.txt
START=$(date +%s)
export PYTHONUNBUFFERED=1 ADVKIT_SHARED_DATA=$CARRY/data ADVKIT_WEIGHTS_DIRS=$CARRY/data/weights
export ADVKIT_HOME=${ADVKIT_HOME:-/tmp/advkit_home}
mkdir -p "$ADVKIT_HOME"
if ! python3 -c "import art, torchattacks" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$CARRY"/whl/*.whl >> "$LOG" 2>&1 || echo "wheel install failed" >> "$LOG"
  export PYTHONPATH=/tmp/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
ADVKIT="python3 -m advkit --device $DEVICE"

step() {  # name limit_s command...: run under min(limit, time left), log rc and wall time
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  ((left < limit)) && limit=$left
  if ((limit < 15)); then echo "=== $name: skipped, ${left}s left" >> "$LOG"; return; fi
  echo "=== $name (limit ${limit}s): $*" >> "$LOG"
  local t0; t0=$(date +%s.%N)
  timeout "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  echo "=== $name rc=$rc wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" >> "$LOG"
}

if [ "$SMOKE" = 1 ]; then
  KF=(--cases b64_32_k5 --repeat 2 --dtype fp32)
  GEN=(--models resnet56 --n 8 --batch-size 4 --steps 2 --skip-check --no-compile)
  E2E=(--limit 20 --steps 2 --batch-size 10)
  PAS=(--n 4 --single 2 --batch-size 4)
  ROB=(--n 8 --batch-size 8 --steps 2 --queries 3)
  MIN=(--n 4 --batch-size 4 --cw-steps 2 --fab-steps 2 --ead-steps 10 --ead-searches 1 --hsj-steps 1)
  BENCH=(--n 20 --eps 1e-3,1e-2 --adaptive-steps 2 --sanity-n 10 --sanity-steps 2 --batch-size 20)
  MODELS=(resnet20)
else
  KF=(--dtype fp32,bf16)
  GEN=(--n 1024 --batch-size 64 --record-auto)
  E2E=(--batch-size 1024)
  PAS=()
  ROB=(--n 500 --batch-size 250 --steps 50 --queries 500 --peers torchattacks)
  MIN=(--n 200 --batch-size 200 --peers torchattacks --hsj-steps 5)
  BENCH=(--n 1000 --eps-grid advfilter --adaptive-steps 40 --sanity-n 100 --sanity-steps 50 --batch-size 500)
  MODELS=(resnet20 resnet56)
fi

{ date; nvidia-smi -L 2>&1; python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"; } >> "$LOG" 2>&1
# 2. the kernel-filter op against the unfold formula (#4)
step kernel_filter 90 python3 -m benchmarks.kernel_filter --device "$DEVICE" "${KF[@]}" --json "$OUT/kf.json"
# 1. every CUDA-marked test
step cuda_tests 120 python3 -m pytest -m cuda -q -p no:cacheprovider tests
# 3. PGD throughput against torchattacks and ART, and the precision check (#5)
step gen_adv_bench 150 python3 benchmarks/gen_adv.py --device "$DEVICE" "${GEN[@]}" --json "$OUT/gen.json"
# 4. end to end: 5000 CIFAR-10 images x the 12-radius grid = 60k rows, PGD-40, strict fp32 (#5). The
#    carried 5000 test images (500 per class) stand in for cifar10_train_5k.npz: same shape and
#    count, same work.
step gen_adv_60k 90 $ADVKIT gen-adv --data "$CARRY/data/cifar10_test.npz" --limit 5000 --model resnet20 \
    --eps-grid advfilter --precision fp32 --out /tmp/train60k.h5 --overwrite "${E2E[@]}"
# 7. Pasadena's cost against MI-FGSM-10 (#8)
step pasadena_cost 60 python3 -m benchmarks.pasadena --device "$DEVICE" "${PAS[@]}" --json "$OUT/pasadena.json"
# 8. APGD / APGD-T / Square against torchattacks' (robust-evaluation attacks)
step robust_eval 60 python3 -m benchmarks.robust_eval --device "$DEVICE" "${ROB[@]}" --json "$OUT/robust.json"
step robust_eval_l2 30 python3 -m benchmarks.robust_eval --device "$DEVICE" "${ROB[@]}" --norm l2 --eps 0.1 \
    --json "$OUT/robust_l2.json"
# 9. DeepFool / CW / FAB against torchattacks' (minimum-norm attacks)
step min_norm 45 python3 -m benchmarks.min_norm --device "$DEVICE" "${MIN[@]}" --json "$OUT/min_norm.json"
# 6. the adaptive bench over the whole grid with PGD-40 (#9), in a fresh folder (a bench refuses
#    an --out made with other settings); ART's JPEG and TVM run on
#    the host per image and per step, too slow for this call: their rows stay the CPU runs'
for m in "${MODELS[@]}"; do
  rm -rf "/tmp/bench/$m"
  step "bench_adaptive_$m" 200 $ADVKIT bench --model "$m" --data "$CARRY/data/cifar10_test.npz" --mode adaptive \
      --defense none,advfilter,pafilt,smoothing,bitdepth "${BENCH[@]}" --out "/tmp/bench/$m"
done
[ -d /tmp/bench ] && tar -czf "$OUT/bench.tgz" -C /tmp bench
echo "=== done after $(($(date +%s) - START)) s" >> "$LOG"
