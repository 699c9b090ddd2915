#!/usr/bin/env bash
# The cell space against the conv space at equal compute: the studies omniglot-5w1s (conv.yaml) and
# omniglot-5w1s-cells (cells.yaml: DARTS-style cells or conv blocks) each search for SEARCH_SECONDS of wall time,
# every trial with the same seconds budget (TRIAL_SECONDS, no iteration cap), one worker, alone on the machine;
# then each study's best learner is scored on the 600 fixed test episodes.
#   usage: bash benchmarks/cells_vs_conv.sh [OUT] [DATA]      (SEARCH_SECONDS=900 TRIAL_SECONDS=60 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/cells_vs_conv}
DATA=${2:-../shared/data/omniglot}
SEARCH_SECONDS=${SEARCH_SECONDS:-900}
TRIAL_SECONDS=${TRIAL_SECONDS:-60}
NAS_META=${NAS_META:-.venv/bin/nas-meta}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
for study in omniglot-5w1s omniglot-5w1s-cells; do
  storage="journal:$OUT/$study.journal"
  "$NAS_META" -q search "$study" --storage "$storage" --timeout "$SEARCH_SECONDS" --n-trials 100000 \
    --set budget.seconds="$TRIAL_SECONDS" --set budget.iterations=100000000 --data "$DATA" > "$OUT/$study.json"
  rm -rf "$OUT/$study-best"
  "$NAS_META" -q export --study-name "$study" --storage "$storage" --out "$OUT/$study-export" > /dev/null
  "$NAS_META" -q evaluate "$OUT/$study-export/best" --episodes 600 --data "$DATA" > "$OUT/$study-test.json"
  cp "$OUT/$study-export/trials.csv" "$OUT/$study-trials.csv"
  cp "$OUT/$study-export/best.yaml" "$OUT/$study-best.yaml"
  rm -rf "$OUT/$study-export" "$OUT/$study-artifacts" "$OUT/$study.journal.asklock"  # the journal keeps the study
done
"$PY" - "$OUT" "$SEARCH_SECONDS" "$TRIAL_SECONDS" <<'PY' | tee "$OUT/summary.md"
import csv, json, sys
out, search, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
print(f"# Cell space vs conv space, {search} s of search each, {seconds} s per trial (Omniglot 5w1s)\n")
print("| study | trials (complete / pruned) | cell trials | best trial | best kind | best dev loss | best dev accuracy "
      "| best, 600 test episodes |")
print("|---|---|---|---|---|---|---|---|")
for study in ("omniglot-5w1s", "omniglot-5w1s-cells"):
    trials = list(csv.DictReader(open(f"{out}/{study}-trials.csv")))
    done = [t for t in trials if t["state"] == "COMPLETE"]
    pruned = sum(t["state"] == "PRUNED" for t in trials)
    cells = sum(t.get("params.architecture.kind") == "cells" for t in trials)
    best = min(done, key=lambda t: float(t["dev_loss"]))
    test = json.load(open(f"{out}/{study}-test.json"))
    print(f"| {study} | {len(trials)} ({len(done)} / {pruned}) | {cells} | {best['number']} | "
          f"{best.get('params.architecture.kind') or 'conv'} | {float(best['dev_loss']):.3f} | "
          f"{100 * float(best['dev_accuracy']):.1f}% | {100 * test['accuracy']:.2f}% ± {100 * test['accuracy_ci95']:.2f} |")
PY
