"""Sinusoid regression (MAML paper, section 5.1) at K = 5, 10, 20: the shipped baselines trained, then scored on the
same 600 fixed test tasks, as the query MSE (100 query points per task) after adaptation, with 95% intervals.

    python benchmarks/sinusoid.py [--iterations 10000] [--shots 5,10,20] [--strategies maml,reptile,pretrain,random]
                                  [--out benchmarks/results/sinusoid]

Each (strategy, K) trains ``studies/baselines/<strategy>-sinusoid-<K>s.yaml`` for ``--iterations`` meta-iterations
(``random`` is MAML's config untrained: fine-tuning from a random init, the control). Writes ``sinusoid.json`` (every
run's numbers) and ``sinusoid.md`` (the table the README quotes). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas_meta.config import load_train_config  # noqa: E402
from nas_meta.sinusoid import SinusoidTasks  # noqa: E402
from nas_meta.training import Result, evaluate, train_iter  # noqa: E402

TEST_TASKS, QUERY_POINTS = 600, 100


def run(strategy: str, shots: int, iterations: int) -> dict[str, object]:
    base = "maml" if strategy == "random" else strategy
    overrides = [f"budget.iterations={iterations}", f"evaluation.every={max(iterations, 1)}"]
    if strategy == "random":
        overrides += ["learner.strategy=random"]
    config = load_train_config(ROOT / "studies" / "baselines" / f"{base}-sinusoid-{shots}s.yaml", overrides)
    start = time.perf_counter()
    result = next(r for r in train_iter(config, device="cpu") if isinstance(r, Result))
    test = SinusoidTasks(torch.device("cpu")).sampler("test", shots, QUERY_POINTS).fixed(TEST_TASKS, 0)
    scores = evaluate(result.learner, test, batch=100)
    return {"strategy": strategy, "shots": shots, "iterations": result.metrics.iterations,
            "train_seconds": result.metrics.train_seconds, "wall_seconds": time.perf_counter() - start,
            "test_steps": config.learner.test_steps, "dev_mse": result.metrics.dev_loss,
            "test_mse": scores.loss, "test_mse_ci95": scores.loss_ci95, "test_tasks": scores.episodes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=10_000)
    p.add_argument("--shots", default="5,10,20")
    p.add_argument("--strategies", default="maml,reptile,pretrain,random")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sinusoid")
    args = p.parse_args()
    rows = []
    for shots in [int(k) for k in args.shots.split(",")]:
        for strategy in args.strategies.split(","):
            row = run(strategy, shots, args.iterations)
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sinusoid.json").write_text(json.dumps(rows, indent=2) + "\n")
    shots_list = sorted({r["shots"] for r in rows})
    lines = [f"Query MSE on {TEST_TASKS} fixed test tasks ({QUERY_POINTS} query points each) after adaptation, ± 95% "
             f"interval over tasks; {args.iterations:,} meta-iterations each (the paper: 70,000).", "",
             "| strategy | " + " | ".join(f"K = {k}" for k in shots_list) + " | train s (each) |",
             "|---|" + "---|" * len(shots_list) + "---|"]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        cells = {r["shots"]: r for r in rows if r["strategy"] == strategy}
        seconds = "/".join(f"{cells[k]['train_seconds']:.0f}" for k in shots_list if k in cells)
        lines.append(f"| {strategy} | " + " | ".join(
            f"{cells[k]['test_mse']:.3f} ± {cells[k]['test_mse_ci95']:.3f}" if k in cells else "–" for k in shots_list)
            + f" | {seconds} |")
    (args.out / "sinusoid.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
