"""Side-by-side speed comparison: nas-meta's MAML meta-step against learn2learn 0.2.0's, on this machine.

Runs learn2learn's canonical step (../shared/bench/peer_maml_l2l.py, in the venv made by
../shared/bench/setup_peer.sh) and ``nas-meta bench`` alternately, ROUNDS times each, for second- and
first-order MAML on the MAML paper's Omniglot network (5-way 1-shot, 1 query per class as in l2l,
meta-batch 32, 1 inner step), and prints the medians and their ratio as a Markdown table. nas-meta also runs
with ``--no-tune-allocator`` in each round, so the table shows what keeping freed memory in the process gains.

    python benchmarks/speed_vs_learn2learn.py [--peer /tmp/nas-meta-peer/bin/python] [--rounds 3] [--iters 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> dict[str, float]:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", default="/tmp/nas-meta-peer/bin/python")
    parser.add_argument("--peer-script", default=str(ROOT.parent / "shared" / "bench" / "peer_maml_l2l.py"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", help="also write the raw runs as JSON here")
    parser.add_argument("--report", help="only print the table of raw runs saved earlier with --out")
    args = parser.parse_args()
    settings = ["--ways", "5", "--shots", "1", "--meta-batch", "32", "--steps", "1"]
    raw = json.loads(Path(args.report).read_text()) if args.report else []
    if not args.report:
        for first_order in (False, True):
            for _ in range(args.rounds):
                p = run([args.peer, args.peer_script, *settings, "--iters", str(args.iters)]
                        + (["--first-order"] if first_order else []))
                ours = [sys.executable, "-m", "nas_meta.cli", "bench", "--learner", "fomaml" if first_order else "maml",
                        *settings, "--query", "1", "--iterations", str(args.iters), "--device", "cpu"]
                o = run(ours)
                u = run([*ours, "--no-tune-allocator"])
                raw.append({"first_order": first_order, "learn2learn": p, "nas_meta": o, "nas_meta_untuned": u})
    rows = []
    for first_order in (False, True):
        peer = [r["learn2learn"]["meta_iters_per_s"] for r in raw if r["first_order"] == first_order]
        ours = [r["nas_meta"]["meta_iters_per_s"] for r in raw if r["first_order"] == first_order]
        untuned = [r["nas_meta_untuned"]["meta_iters_per_s"] for r in raw
                   if r["first_order"] == first_order and "nas_meta_untuned" in r]
        p_med, o_med = statistics.median(peer), statistics.median(ours)
        u_med = statistics.median(untuned) if untuned else float("nan")
        rows.append((first_order, p_med, o_med, u_med, o_med / p_med, min(o / p for o, p in zip(ours, peer)),
                     max(o / p for o, p in zip(ours, peer))))
    print("| MAML | learn2learn 0.2.0 (meta-it/s) | nas-meta (meta-it/s) | ratio (median) | ratio range per round "
          "| nas-meta, allocator untouched (meta-it/s) |")
    print("|---|---|---|---|---|---|")
    for first_order, p_med, o_med, u_med, ratio, lo, hi in rows:
        kind = "first order" if first_order else "second order"
        print(f"| {kind} | {p_med:.2f} | {o_med:.2f} | **{ratio:.2f}x** | {lo:.2f}-{hi:.2f}x | {u_med:.2f} |")
    if args.out and not args.report:
        Path(args.out).write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
