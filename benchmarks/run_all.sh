#!/usr/bin/env bash
# Every number in the README, one after the other on an otherwise idle machine (about 3 hours on 2 cores).
#   usage: bash benchmarks/run_all.sh [RESULTS]        (default RESULTS: benchmarks/results)
set -euo pipefail
R=${1:-benchmarks/results}
DATA=${NAS_META_DATA:-../shared/data/omniglot}
export NAS_META_DATA=$DATA
mkdir -p "$R"
[ -x /tmp/nas-meta-peer/bin/python ] || bash ../shared/bench/setup_peer.sh /tmp/nas-meta-peer
python benchmarks/speed_vs_learn2learn.py --rounds 5 --iters 30 --out "$R/speed.json" | tee "$R/speed.md"
python benchmarks/ablation_engine.py --rounds 3 --iters 20 | tee "$R/ablation_engine.md"
bash benchmarks/quality.sh "$R/quality" maml reptile metasgd pretrain | tee "$R/quality.md"
python benchmarks/search_floors.py --data "$DATA" --out "$R/search" --runs "$R/runs"
nas-meta export --study-name bench-5w1s-median --storage "journal:$R/runs/bench-5w1s-median.journal" --out "$R/export"
nas-meta compare "$R/export/best.yaml" --baselines maml,reptile --seeds 2 --episodes 600 --budget-seconds 60 \
  --data "$DATA" --out "$R/compare" | tee "$R/compare.md"
python -m benchmarks.fault_tolerance --data "$DATA" | tee "$R/fault_tolerance.json"
