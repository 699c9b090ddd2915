"""Chaos figures (issue: fault tolerance under repeated kills): seeded SIGKILL/SIGTERM events on worker pools.

For each storage (a fresh PostgreSQL database, an embedded journal file), a tiny study (tests/helpers_study.py)
runs as ``nas-meta search STUDY --storage URL --workers 3``. ``--events`` times, at a random moment while a trial
runs, a seeded ``random.Random`` picks SIGKILL or SIGTERM and a worker or the pool's parent and sends it; the
command is run again whenever its parent is gone, as a user would. After the last event the search is run to
completion and the study is checked (the procedure and its checks: tests/search/chaos.py, also run by
tests/search/test_chaos.py). Heartbeat every 1 s, grace 4 s. Prints JSON; exits 1 if any check failed.

    python -m benchmarks.chaos [--seed 0] [--events 10] [--trials 12] [--data DIR]     (from the repository root)

Every wait is bounded: a stage that does not happen within its limit stops that storage's run with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers_study import make_study, worker_env
from tests.search.chaos import CHAOS_ENV, KINDS, ChaosError, ChaosRun, fresh_database


def one_storage(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"nas-meta-chaos-{kind}-") as tmp:
        folder = Path(tmp)
        study = make_study(folder, iterations=args.iterations, every=max(1, args.iterations // 2),
                           n_trials=args.trials, pruner="none")

        def go(url: str) -> dict[str, Any]:
            run = ChaosRun(study, url, Path(args.data), folder, seed=args.seed, events=args.events, n_trials=args.trials,
                           max_delay=args.max_delay, kinds=tuple(args.kinds), env=worker_env(**CHAOS_ENV),
                           inject_bound=60.0 * args.events + 120.0)
            try:
                figures = run.run()
            except ChaosError as err:
                return {"error": str(err), "wall_seconds": run.elapsed(), "logs": run.logs(1500)}
            if figures["problems"] and args.logs:
                figures["logs"] = run.logs(1500)
            if not args.verbose:
                figures.pop("events")
            return figures

        if kind == "postgresql":
            with fresh_database("nas_meta_bench_chaos") as url:
                return {"storage": "postgresql", **go(url)}
        return {"storage": "journal", **go(f"journal:{folder / 'runs' / 'tiny.journal'}")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", type=int, default=10, help="kill events per storage (default: 10)")
    parser.add_argument("--trials", type=int, default=12, help="the study's n_trials (default: 12)")
    parser.add_argument("--iterations", type=int, default=40, help="meta-iterations per trial (default: 40)")
    parser.add_argument("--max-delay", type=float, default=2.0,
                        help="an event comes 0 to this many seconds after a trial is seen running (default: 2)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), metavar="'SIGNAL TARGET'", choices=KINDS,
                        help="the events to draw from (default: all four)")
    parser.add_argument("--storages", nargs="+", default=["postgresql", "journal"], choices=["postgresql", "journal"])
    parser.add_argument("--data", default=os.environ.get("NAS_META_DATA", "../shared/data/omniglot"))
    parser.add_argument("--verbose", action="store_true", help="list every event")
    parser.add_argument("--logs", action="store_true", help="include the commands' output when a check fails")
    args = parser.parse_args()
    start = time.monotonic()
    results = [one_storage(kind, args) for kind in args.storages]
    ok = all("error" not in r and not r["problems"] for r in results)
    print(json.dumps({"seed": args.seed, "events_per_storage": args.events, "trials": args.trials,
                      "all_checks_passed": ok, "results": results,
                      "wall_seconds": round(time.monotonic() - start, 1)}, indent=2, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
