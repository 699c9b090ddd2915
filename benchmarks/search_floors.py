"""Search floors (issue: search studies), measured on this machine:

1. On omniglot-5w1s at an equal CPU budget per trial, the best searched learner's dev loss is below both enqueued
   baselines', and its test accuracy (600 episodes) is at least the better baseline's.
2. Pruning pays: the meta-training compute (sum of trials' training seconds, in trial order) the pruned study
   spends to reach the best dev loss both studies reach (the worse of their two bests), over what the unpruned
   study spent to reach it.

Runs benchmarks/studies/search-5w1s-{median,none}.yaml (same seed, same sampler), writes search_floors.{json,md}
under --out and prints the Markdown report.
    python benchmarks/search_floors.py [--data DIR] [--out benchmarks/results/search] [--runs runs/bench]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas_meta.errors import StudyFinished
from nas_meta.inference import evaluate_learner
from nas_meta.search import search
from nas_meta.studies import fetch_trial_learner

ROOT = Path(__file__).resolve().parent


def _train_seconds(trial: optuna.trial.FrozenTrial) -> float:
    return float(trial.user_attrs.get("train_seconds") or (trial.duration.total_seconds() if trial.duration else 0.0))


def _in_order(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def compute_to_reach(study: optuna.Study, target: float) -> float | None:
    """Training seconds summed over trials in order until one reaches dev loss <= target (None if never)."""
    spent = 0.0
    for t in _in_order(study):
        spent += _train_seconds(t)
        if t.state == TrialState.COMPLETE and t.value is not None and t.value <= target:
            return spent
    return None


def compute_to_run(study: optuna.Study, params: dict[str, object]
                   ) -> tuple[float, optuna.trial.FrozenTrial] | tuple[None, None]:
    """Training seconds summed over trials in order until one with ``params`` completes, and that trial."""
    spent = 0.0
    for t in _in_order(study):
        spent += _train_seconds(t)
        if t.state == TrialState.COMPLETE and t.params == params:
            return spent, t
    return None, None


def same_proposals(a: optuna.Study, b: optuna.Study) -> int:
    """How many first trials the two studies proposed with identical parameters."""
    count = 0
    for s, t in zip(_in_order(a), _in_order(b)):
        if s.params != t.params:
            break
        count += 1
    return count


def total_compute(study: optuna.Study) -> float:
    """The whole study's meta-training seconds."""
    return sum(_train_seconds(t) for t in _in_order(study))


def score_on_test(study: optuna.Study, storage: str, earlier: dict[str, Any], data: str | None
                  ) -> tuple[optuna.trial.FrozenTrial, dict[str, Any]]:
    """The best searched trial, and the test scores (600 episodes) of it and of the enqueued baselines.

    Scores in ``earlier`` (an earlier run of this script on the same studies) are reused.
    """
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    baselines = {t.user_attrs["baseline"]: t for t in trials if "baseline" in t.user_attrs}
    searched = min((t for t in trials if "baseline" not in t.user_attrs), key=lambda t: float(t.values[0]))
    test: dict[str, Any] = {}
    for label, trial in [("searched", searched), *baselines.items()]:
        if (earlier.get(label, {}).get("trial"), earlier.get(label, {}).get("dev_loss")) == (trial.number, trial.value):
            test[label] = earlier[label]
            continue
        folder = fetch_trial_learner(storage, study.study_name, trial.number)
        test[label] = evaluate_learner(folder, split="test", episodes=600, data=data, device="cpu")
        test[label]["trial"] = trial.number
        test[label]["dev_loss"] = trial.value
        test[label]["strategy"] = trial.user_attrs["strategy"]
    return searched, test


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
        except StudyFinished as err:  # an already finished study is reused
            print(f"{pruner}: {err}")
        studies[pruner] = (optuna.load_study(study_name=f"bench-5w1s-{pruner}",
                                             storage=optuna.storages.JournalStorage(
                                                 optuna.storages.journal.JournalFileBackend(storage[8:]))), storage)
    saved = out / "search_floors.json"
    earlier = json.loads(saved.read_text()) if saved.exists() else {}
    study, _ = studies["median"]
    searched_trials, test = {}, {}
    for pruner, key in (("median", "test"), ("none", "test_unpruned")):
        searched_trials[pruner], test[key] = score_on_test(*studies[pruner], earlier.get(key, {}), args.data)
    searched = searched_trials["median"]
    nopruner, _ = studies["none"]
    best = {"median": study.best_value, "none": nopruner.best_value}
    # "the same best dev loss", read two ways: the unpruned study's best, and the level both studies reach
    targets = {"unpruned best": best["none"], "worse of the two bests": max(best.values())}
    reach = {}
    for label, target in targets.items():
        with_pruner, without = compute_to_reach(study, target), compute_to_reach(nopruner, target)
        reach[label] = {"target_dev_loss": target, "compute_with_pruner_s": with_pruner,
                        "compute_without_pruner_s": without,
                        "ratio": with_pruner / without if with_pruner and without else None}
    # and read as the same best configuration: the unpruned study's best trial's parameters, wherever the pruned
    # study runs them to completion (trials budgeted in seconds score one configuration slightly differently)
    best_params = nopruner.best_trial.params
    (with_pruner, rerun), (without, _) = compute_to_run(study, best_params), compute_to_run(nopruner, best_params)
    reach["unpruned best configuration"] = {
        "target_dev_loss": best["none"], "trial_without_pruner": nopruner.best_trial.number,
        "dev_loss_with_pruner": rerun.value if rerun is not None else None,
        "compute_with_pruner_s": with_pruner, "compute_without_pruner_s": without,
        "ratio": with_pruner / without if with_pruner and without else None}
    total = {name: total_compute(s) for name, (s, _) in studies.items()}
    report = {**test, "searched_params": searched.params, "pruning": {
        "best_dev_loss": best, "to_reach": reach, "total_compute_s": total,
        "same_proposals": same_proposals(study, nopruner),
        "states": {name: {st.name: sum(t.state == st for t in s.trials) for st in TrialState}
                   for name, (s, _) in studies.items()},
    }}
    (out / "search_floors.json").write_text(json.dumps(report, indent=2, default=str))
    lines = ["| study | learner | trial | strategy | dev loss | test accuracy (600 episodes) |",
             "|---|---|---|---|---|---|"]
    for key, name in (("test", "median pruner"), ("test_unpruned", "no pruner")):
        for label, r in test[key].items():
            lines.append(f"| {name} | {label} | {r['trial']} | {r['strategy']} | {r['dev_loss']:.4f} | "
                         f"{100 * r['accuracy']:.2f}% ± {100 * r['accuracy_ci95']:.2f} |")
    p = report["pruning"]
    lines += ["", f"Best dev loss: {best['median']:.4f} with the median pruner, {best['none']:.4f} without.", "",
              "| target dev loss | meta-training to reach it, pruned | unpruned | ratio |", "|---|---|---|---|"]
    for label, r in reach.items():
        lines.append(f"| {r['target_dev_loss']:.4f} ({label}) | {_seconds(r['compute_with_pruner_s'])} | "
                     f"{_seconds(r['compute_without_pruner_s'])} | "
                     f"{'n/a' if r['ratio'] is None else format(r['ratio'], '.2f')} |")
    lines += ["", f"The two studies proposed the same parameters for their first {p['same_proposals']} trials.", "",
              f"Whole studies: {_seconds(total['median'])} of meta-training with the pruner, "
              f"{_seconds(total['none'])} without; trial states with the pruner: "
              f"{ {k: v for k, v in p['states']['median'].items() if v} }."]
    (out / "search_floors.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


if __name__ == "__main__":
    main()
