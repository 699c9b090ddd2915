#!/usr/bin/env bash
# The GPU check: one command that ends within 9.5 minutes on one H100/H200 (every stage has its own time limit,
# 560 s in all) and writes what it measured.
#   (a) the engine and learner correctness tests on CUDA (float64 equivalence of both engines with the per-task loop,
#       second-order MAML through several steps, batch norm);
#   (b) the speed matrix on CUDA against learn2learn on the same GPU (benchmarks/matrix.py), then where a MAML step's
#       time goes there: both engines side by side and the profiler's top operations (benchmarks/gpu_profile.py),
#       and the whole step captured in a CUDA graph against eager (benchmarks/gpu_graphs.py);
#   (c) MAML 5w1s, the paper's protocol (60,000 meta-iterations, meta-batch 32): trained as far as its time slot
#       allows, timed, then scored on the 600 fixed test episodes, with the time the whole would take;
#   (d) the smoke study with 1 and with 4 workers sharing the one GPU: trials per hour.
# On the device machine (after `bash benchmarks/gpu_prepare.sh` here), e.g.:
#   device run --carry .whl .data -- 'bash benchmarks/gpu_check.sh /tmp/gpu; cp /tmp/gpu/gpu-*.md "$OUT"; \
#     tar czf "$OUT/gpu.tgz" -C /tmp gpu'   (the device tool returns at most 8 files)
# In CI: `bash benchmarks/gpu_check.sh --dry-run OUT` runs every stage on the CPU with tiny sizes, so it cannot rot.
# GPU_CHECK_STAGES (default "a b c d") picks stages, e.g. "a c d" after (b) was measured on this card; PAPER_SECONDS
# (default 80) is (c)'s training slot: 330 lets a CUDA-graphed 5w1s run do all 60,000 iterations on an H100/H200.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
if [ "$DRY" = 1 ]; then set -e; fi  # CI: any stage that fails fails the check; on the GPU every stage gets its turn
PY=${PYTHON:-python3}
if [ -d .whl ] && [ "$DRY" = 0 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export NAS_META_DATA=${NAS_META_DATA:-$( [ -d .data/omniglot ] && echo "$PWD/.data/omniglot" || echo "$PWD/../shared/data/omniglot")}
if [ "$DRY" = 1 ]; then DEVICE=cpu; else DEVICE=cuda; fi
CARD=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-') if torch.cuda.is_available() else 'cpu')")
REPORT="$OUT/gpu-$CARD.md"
stage() { echo "== $*" | tee -a "$REPORT"; }
STAGES=${GPU_CHECK_STAGES:-a b c d}
wanted() { [[ " $STAGES " == *" $1 "* ]]; }
: > "$REPORT"
stage "card: $CARD; torch $("$PY" -c 'import torch; print(torch.__version__)'); $(date -u +%FT%TZ); dry run: $DRY"

# (a) correctness on the device
if wanted a; then
stage "(a) correctness tests on $DEVICE"
NAS_META_TEST_DEVICE=$DEVICE timeout $( [ "$DRY" = 1 ] && echo 300 || echo 60 ) "$PY" -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/test_functional.py tests/learners tests/test_architectures.py tests/test_bench.py 2>&1 | tail -3 | tee -a "$REPORT"
fi

# (b) the speed matrix, peers on the same device
if wanted b; then
stage "(b) speed matrix on $DEVICE"
if [ "$DRY" = 1 ]; then
  timeout 300 "$PY" benchmarks/matrix.py --dry-run --device cpu --cells 5w1s-so,reptile-5w1s --out "$OUT/matrix" \
    2>&1 | tail -4 | tee -a "$REPORT"
else
  timeout ${MATRIX_SECONDS:-140} "$PY" benchmarks/matrix.py --peer "$PY" --device cuda --rounds 1 --iters ${MATRIX_ITERS:-5} --out "$OUT/matrix" \
    2>&1 | tail -12 | tee -a "$REPORT"
fi
stage "(b) where a MAML step's time goes on $DEVICE"
timeout 45 "$PY" benchmarks/gpu_profile.py --device "$DEVICE" --out "$OUT/profile.json" \
  $( [ "$DRY" = 1 ] && echo --dry-run ) > "$OUT/profile.txt" 2>&1
grep -E '^\||per step' "$OUT/profile.txt" | tee -a "$REPORT"
stage "(b) the whole step in a CUDA graph against eager"
timeout 30 "$PY" benchmarks/gpu_graphs.py --out "$OUT/graphs.json" 2>&1 | tail -16 | tee -a "$REPORT"
stage "(b) building a meta-batch of real Omniglot episodes on $DEVICE (the host's share of a graphed step)"
timeout 60 "$PY" benchmarks/gpu_episodes.py --device "$DEVICE" --iters $( [ "$DRY" = 1 ] && echo 3 || echo 200 ) \
  --out "$OUT/episodes.json" 2>&1 | tail -14 | tee -a "$REPORT"
fi

# (c) the MAML paper protocol, as far as its time slot allows
if wanted c; then
stage "(c) MAML 5w1s, paper protocol (60,000 meta-iterations, meta-batch 32)"
if [ "$DRY" = 1 ]; then SLOT=5; ITERS=3; else SLOT=${PAPER_SECONDS:-80}; ITERS=60000; fi
timeout $((SLOT + 60)) "$PY" -m nas_meta.cli -q train studies/baselines/maml-5w1s.yaml --out "$OUT/maml-paper" \
  --device "$DEVICE" --set budget.iterations=$ITERS --set budget.seconds=$SLOT --set evaluation.every=100000 \
  $( [ "$DRY" = 1 ] && echo "--set learner.meta_batch=2 --set evaluation.dev_episodes=2" ) > "$OUT/maml-paper.json" 2>> "$REPORT"
"$PY" - "$OUT/maml-paper.json" "$ITERS" <<'PY' | tee -a "$REPORT"
import json, sys
m = json.load(open(sys.argv[1])); total = int(sys.argv[2])
rate = m["iterations"] / max(m["train_seconds"], 1e-9)
print(f"{m['iterations']} meta-iterations in {m['train_seconds']:.0f} s = {rate:.1f} it/s; all {total}: "
      f"{total / rate / 60:.1f} min; status {m['status']}")
PY
timeout 45 "$PY" -m nas_meta.cli -q evaluate "$OUT/maml-paper" --device "$DEVICE" \
  --episodes $( [ "$DRY" = 1 ] && echo 4 || echo 600 ) > "$OUT/maml-paper-test.json" 2>> "$REPORT" \
  && "$PY" -c "import json; r = json.load(open('$OUT/maml-paper-test.json')); print(f\"test accuracy {100*r['accuracy']:.2f}% ± {100*r['accuracy_ci95']:.2f} ({r['episodes']} episodes)\")" | tee -a "$REPORT"
fi

# (d) the smoke study with 1 and 4 workers on the one device: trials per hour
if wanted d; then
stage "(d) smoke study, 1 and 4 workers on one $DEVICE"
for workers in 1 4; do
  storage="journal:$OUT/smoke-$workers.journal"
  start=$(date +%s.%N)
  timeout $( [ "$DRY" = 1 ] && echo 240 || echo 50 ) "$PY" -m nas_meta.cli -q search smoke --storage "$storage" \
    --workers $workers --device $( [ "$DRY" = 1 ] && echo cpu || echo auto ) \
    $( [ "$DRY" = 1 ] && echo "--n-trials 2 --set budget.iterations=2 --set evaluation.dev_episodes=2" \
                       || echo "--n-trials 400 --timeout 25" ) \
    > "$OUT/smoke-$workers.json" 2>> "$REPORT"
  "$PY" - "$OUT/smoke-$workers.json" "$start" "$workers" <<'PY' | tee -a "$REPORT"
import json, sys, time
s = json.load(open(sys.argv[1])); seconds = time.time() - float(sys.argv[2])
print(f"{sys.argv[3]} worker(s): {s['trials']} trials in {seconds:.0f} s = {3600 * s['trials'] / seconds:.0f} trials/hour")
PY
done
fi
stage "done"
cat "$REPORT"
