"""``nas-meta bench`` of two commits side by side, alternating, in one run (for "speed unchanged" claims).

    python benchmarks/bench_commits.py OLD_REV [--rounds 5] [--iterations 20] [--first-order]

Checks OLD_REV out into a temporary git worktree, then times the MAML step of the old and the current tree in
alternating rounds (each in its own process, same venv), and prints the medians and their ratio as JSON.
Run it alone on the machine: any other process changes PyTorch's CPU throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(tree: Path, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "nas_meta.cli", "-q", "bench", "--learner", "fomaml" if args.first_order else "maml",
           "--iterations", str(args.iterations), "--device", "cpu"]
    out = subprocess.run(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                         timeout=900, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["meta_iters_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--first-order", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old], check=True,
                       capture_output=True, timeout=120)
        try:
            rates: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                rates["old"].append(bench(old, args))
                rates["new"].append(bench(ROOT, args))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False,
                           capture_output=True, timeout=120)
    old_median, new_median = statistics.median(rates["old"]), statistics.median(rates["new"])
    print(json.dumps({"old": args.old, "first_order": args.first_order, "rounds": args.rounds,
                      "old_meta_iters_per_s": rates["old"], "new_meta_iters_per_s": rates["new"],
                      "old_median": old_median, "new_median": new_median, "new_over_old": new_median / old_median},
                     indent=2))


if __name__ == "__main__":
    main()
