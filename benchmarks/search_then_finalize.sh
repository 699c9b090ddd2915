#!/usr/bin/env bash
# Does a learner searched at realistic per-trial budgets beat MAML and Reptile given the same 15 CPU-minutes?
#   search:   the study omniglot-5w1s, each trial TRIAL_SECONDS of meta-training (no iteration cap), for
#             SEARCH_SECONDS of wall time, one worker, alone on the machine. The journal keeps the study: run the
#             stage again and it goes on from the trials it holds.
#   finalize: its TOP_K best trials retrained for FINAL_SECONDS each (SEEDS seeds), the one with the lowest dev loss
#             at that budget tested once, beside MAML and Reptile trained with the same seconds and seeds on the
#             same 600 fixed test episodes (paired differences). Run it again after a stop: every run that ended
#             by itself is loaded and scored again, not retrained.
#   usage: bash benchmarks/search_then_finalize.sh [search|finalize|all] [OUT] [DATA]
#   defaults: SEARCH_SECONDS=3600 TRIAL_SECONDS=180 TOP_K=5 FINAL_SECONDS=900 SEEDS=1 EPISODES=600
#             (about 1 h of search, then 7 runs of 15 min and their scoring)
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
OUT=${2:-benchmarks/results/search_then_finalize}
DATA=${3:-../shared/data/omniglot}
SEARCH_SECONDS=${SEARCH_SECONDS:-3600}
TRIAL_SECONDS=${TRIAL_SECONDS:-180}
TOP_K=${TOP_K:-5}
FINAL_SECONDS=${FINAL_SECONDS:-900}
SEEDS=${SEEDS:-1}
EPISODES=${EPISODES:-600}
NAS_META=${NAS_META:-.venv/bin/nas-meta}
case "$STAGE" in search|finalize|all) ;; *) echo "usage: $0 [search|finalize|all] [OUT] [DATA]" >&2; exit 2 ;; esac
mkdir -p "$OUT"
STORAGE="journal:$OUT/omniglot-5w1s.journal"
if [ "$STAGE" != finalize ]; then
  "$NAS_META" search omniglot-5w1s --storage "$STORAGE" --timeout "$SEARCH_SECONDS" --n-trials 100000 \
    --set budget.seconds="$TRIAL_SECONDS" --set budget.iterations=100000000 --data "$DATA" 2>&1 \
    | tee -a "$OUT/search.log"
  "$NAS_META" -q export --storage "$STORAGE" --study-name omniglot-5w1s --out "$OUT/export" > /dev/null
  cp "$OUT/export/trials.csv" "$OUT/search-trials.csv"
fi
if [ "$STAGE" != search ]; then
  "$NAS_META" finalize omniglot-5w1s --storage "$STORAGE" --top-k "$TOP_K" --budget-seconds "$FINAL_SECONDS" \
    --seeds "$SEEDS" --episodes "$EPISODES" --out "$OUT/finalize" --data "$DATA" 2>&1 | tee -a "$OUT/finalize.log"
fi
