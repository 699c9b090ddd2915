#!/usr/bin/env bash
# Quality floor (issue: core): meta-train each baseline config for its CPU budget (budget.seconds in the
# file: 840 s of meta-training, dev scoring on top, under 15 minutes in all), then score it on the 600 fixed test episodes
# of the maml protocol. Writes one JSON per learner into OUT (default benchmarks/results/quality).
#   usage: bash benchmarks/quality.sh [OUT] [learner ...]     (learners: maml reptile metasgd pretrain)
set -euo pipefail
OUT=${1:-benchmarks/results/quality}; shift || true
LEARNERS=${*:-maml reptile metasgd pretrain}
DATA=${NAS_META_DATA:-../shared/data/omniglot}
mkdir -p "$OUT"
for name in $LEARNERS; do
  cfg=studies/baselines/$name-5w1s.yaml
  nas-meta train "$cfg" --out "$OUT/$name" --data "$DATA" --device "${DEVICE:-auto}" > "$OUT/$name.train.json"
  nas-meta evaluate "$OUT/$name" --split test --episodes 600 --data "$DATA" > "$OUT/$name.test.json"
  python - "$OUT/$name.train.json" "$OUT/$name.test.json" <<'PY'
import json, sys
train, test = (json.load(open(p)) for p in sys.argv[1:])
print(f"{test['strategy']:9s} iterations={train['iterations']:6d} train_s={train['train_seconds']:6.0f} "
      f"test_acc={100 * test['accuracy']:.2f}% ± {100 * test['accuracy_ci95']:.2f}")
PY
done
