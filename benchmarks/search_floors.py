"""Search floors (issue: search studies), measured on this machine:

1. On omniglot-5w1s at an equal CPU budget per trial, the best searched learner's dev loss is below both enqueued
   baselines', and its test accuracy (600 episodes) is at least the better baseline's.
2. Pruning pays: the meta-training compute (sum of trials' training seconds) the pruned study spends to reach the
   unpruned study's best dev loss, over what the unpruned study spent to reach it.

Runs benchmarks/studies/search-5w1s-{median,none}.yaml (same seed, same sampler) and prints a Markdown report.
    python benchmarks/search_floors.py [--data DIR] [--out benchmarks/results/search] [--runs runs/bench]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nas_meta.api import evaluate_learner
from nas_meta.search import AlreadyFinished, fetch_trial_learner, search

ROOT = Path(__file__).resolve().parent


def compute_to_reach(study: optuna.Study, target: float) -> float | None:
    """Training seconds summed over trials in order until one reaches dev loss <= target (None if never)."""
    spent = 0.0
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        spent += float(t.user_attrs.get("train_seconds") or (t.duration.total_seconds() if t.duration else 0.0))
        if t.state == TrialState.COMPLETE and t.value is not None and t.value <= target:
            return spent
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default="benchmarks/results/search")
    parser.add_argument("--runs", default="runs/bench")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    studies = {}
    for pruner in ("median", "none"):
        storage = f"journal:{Path(args.runs) / f'bench-5w1s-{pruner}.journal'}"
        path = ROOT / "studies" / f"search-5w1s-{pruner}.yaml"
        try:
            search(path, storage=storage, device="cpu", data=args.data)
        except AlreadyFinished as err:  # an already finished study is reused
            print(f"{pruner}: {err}")
        studies[pruner] = (optuna.load_study(study_name=f"bench-5w1s-{pruner}",
                                             storage=optuna.storages.JournalStorage(
                                                 optuna.storages.journal.JournalFileBackend(storage[8:]))), storage)
    study, storage = studies["median"]
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    baselines = {t.user_attrs["baseline"]: t for t in trials if "baseline" in t.user_attrs}
    searched = min((t for t in trials if "baseline" not in t.user_attrs), key=lambda t: t.value)
    test = {}
    for label, trial in [("searched", searched), *baselines.items()]:
        folder = fetch_trial_learner(storage, study.study_name, trial.number)
        test[label] = evaluate_learner(folder, split="test", episodes=600, data=args.data, device="cpu")
        test[label]["trial"] = trial.number
        test[label]["dev_loss"] = trial.value
        test[label]["strategy"] = trial.user_attrs["strategy"]
    nopruner, _ = studies["none"]
    target = min(t.value for t in nopruner.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE)
    with_pruner = compute_to_reach(study, target)
    without = compute_to_reach(nopruner, target)
    report = {"test": test, "searched_params": searched.params, "pruning": {
        "target_dev_loss": target, "compute_with_pruner_s": with_pruner, "compute_without_pruner_s": without,
        "ratio": None if with_pruner is None or without is None else with_pruner / without,
        "states_with_pruner": {s.name: sum(t.state == s for t in study.trials) for s in TrialState},
    }}
    (out / "search_floors.json").write_text(json.dumps(report, indent=2, default=str))
    print("| learner | trial | strategy | dev loss | test accuracy (600 episodes) |\n|---|---|---|---|---|")
    for label, r in test.items():
        print(f"| {label} | {r['trial']} | {r['strategy']} | {r['dev_loss']:.4f} | "
              f"{100 * r['accuracy']:.2f}% ± {100 * r['accuracy_ci95']:.2f} |")
    p = report["pruning"]
    print(f"\nPruning: to reach dev loss {target:.4f} (the unpruned study's best), the median-pruned study spent "
          f"{p['compute_with_pruner_s']} s of meta-training, the unpruned one {p['compute_without_pruner_s']} s "
          f"(ratio {p['ratio']}).")


if __name__ == "__main__":
    main()
