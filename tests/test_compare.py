"""Candidate vs baselines on the same test episodes: the paired difference and its interval, the written table."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nas_meta.compare import check_compare_target, compare, paired_difference
from nas_meta.config import MAX_ITERATIONS, BudgetConfig, TrainConfig, train_config_from_dict
from nas_meta.errors import ConfigError, DataError
from tests.conftest import nas_meta_cli, snapshot


def accuracies(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode accuracies of two methods that find the same episodes hard (positively correlated)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.3, 0.95, n)
    a = np.clip(difficulty + rng.normal(0.03, 0.02, n), 0, 1)
    b = np.clip(difficulty + rng.normal(0.0, 0.02, n), 0, 1)
    return a, b


def test_paired_difference_is_the_mean_and_normal_ci_of_the_differences() -> None:
    a, b = accuracies(600)
    mean, half = paired_difference(a, b)
    d = a - b
    assert mean == pytest.approx(d.mean(), abs=1e-15)
    assert half == pytest.approx(1.959963984540054 * d.std(ddof=1) / math.sqrt(600), rel=1e-12)
    assert half > 0 and mean - half > 0  # the 0.03 advantage of a is resolved on 600 paired episodes


def test_pairing_narrows_the_interval_of_correlated_methods() -> None:
    a, b = accuracies(200, seed=1)
    assert np.corrcoef(a, b)[0, 1] > 0.9
    _, paired = paired_difference(a, b)
    z = 1.959963984540054
    unpaired = z * math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert paired < unpaired / 4
    _, shuffled = paired_difference(a, np.random.default_rng(2).permutation(b))  # pairs broken
    assert shuffled > 4 * paired


def test_paired_difference_of_identical_methods_is_zero() -> None:
    a, _ = accuracies(50)
    assert paired_difference(a, a) == (0.0, 0.0)
    assert math.isnan(paired_difference(a[:1], a[:1] - 0.1)[1])  # one episode: no interval


def test_compare_refuses_fewer_than_one_seed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        compare(TrainConfig(), tmp_path / "out", seeds=0)
    assert str(info.value) == "--seeds 0 is not allowed: expected an integer >= 1."
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_compare_writes_paired_table(tmp_path: Path, omniglot: Path) -> None:
    config = tmp_path / "cand.yaml"
    config.write_text("name: cand\ntask: {ways: 5, shots: 1, query: 2}\narchitecture: {channels: 16}\n"
                      "learner: {strategy: fomaml, meta_batch: 4, test_steps: 3}\nbudget: {iterations: 3}\n"
                      "evaluation: {dev_episodes: 5, every: 100}\n")
    done = nas_meta_cli("compare", str(config), "--seeds", "2", "--episodes", "30", "--out", str(tmp_path / "cmp"),
                        "--data", str(omniglot), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert list(table["strategy"]) == ["fomaml", "maml", "reptile"]
    assert (table["iterations"] == 3).all() and (table["stopped_by"] == "iterations").all()
    runs = pd.read_csv(tmp_path / "cmp" / "runs.csv")
    assert len(runs) == 6 and set(runs["seed"]) == {0, 1}
    assert {"diff_vs_maml", "diff_vs_maml_ci95", "diff_vs_reptile", "diff_vs_reptile_ci95"} <= set(table.columns)
    candidate = table.loc[0]
    assert table.loc[1:, "diff_vs_maml"].isna().all()  # only the candidate's row holds differences
    for base in ("maml", "reptile"):
        diff, ci = candidate[f"diff_vs_{base}"], candidate[f"diff_vs_{base}_ci95"]
        assert -1 <= diff <= 1
        assert 0 < ci < 1  # 30 episodes and two seeds: a finite, non-degenerate interval
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "same budget (3 meta-iterations)" in md and "paper settings" in md
    printed = (f"vs maml: {100 * candidate['diff_vs_maml']:+.2f} ± {100 * candidate['diff_vs_maml_ci95']:.2f} pts; "
               f"vs reptile: {100 * candidate['diff_vs_reptile']:+.2f} ± "
               f"{100 * candidate['diff_vs_reptile_ci95']:.2f} pts")
    assert printed in md
    assert (tmp_path / "cmp" / "comparison.html").stat().st_size > 100_000


# -- regression: --out is checked before any work: other files, below a file; an earlier comparison is accepted ----

METHODS = ["candidate", "maml", "reptile"]  # the folders of a comparison of a candidate with the two baselines




def _earlier_comparison(out: Path) -> None:
    out.mkdir()
    for name in ("comparison.csv", "comparison.md", "comparison.html", "runs.csv"):
        (out / name).write_text(f"earlier {name}")
    for method in METHODS:
        (out / method / "seed-0").mkdir(parents=True)
        (out / method / "seed-0" / "config.yaml").write_text("earlier")
    (out / ".DS_Store").write_text("hidden files do not count")


@pytest.mark.parametrize(("make", "others"), [
    pytest.param(lambda out: (out.mkdir(), (out / "notes.txt").write_text("mine")), "notes.txt", id="a-file"),
    pytest.param(lambda out: (_earlier_comparison(out), (out / "results.csv").write_text("mine")), "results.csv",
                 id="an-earlier-comparison-and-a-file"),
    pytest.param(lambda out: (out.mkdir(), (out / "maml").write_text("a file, not a method folder")), "maml",
                 id="a-method-name-that-is-a-file"),
    pytest.param(lambda out: (out.mkdir(), (out / "comparison.csv").mkdir()), "comparison.csv",
                 id="a-table-name-that-is-a-folder"),
    pytest.param(lambda out: (out.mkdir(), (out / "other-method").mkdir()), "other-method", id="a-foreign-folder"),
    pytest.param(lambda out: (out.mkdir(), [(out / f"f{i}.txt").write_text("") for i in range(7)]),
                 "f0.txt, f1.txt, f2.txt, f3.txt, f4.txt, …", id="many-files"),
])
def test_a_compare_target_with_other_files_is_refused_naming_them(tmp_path: Path, make: Any, others: str) -> None:
    out = tmp_path / "cmp"
    make(out)
    before = snapshot(tmp_path)
    message = (f"--out {str(out)!r} holds files that are not a comparison ({others}); give a new or empty folder, "
               "or an earlier comparison to replace.")
    with pytest.raises(ConfigError) as info:
        check_compare_target(out, METHODS)
    assert str(info.value) == message
    with pytest.raises(ConfigError) as info:  # through compare, before any data is looked for or run trained
        compare(TrainConfig(), out, seeds=1, data=tmp_path / "no-data", device="cpu")
    assert str(info.value) == message
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("make", [
    pytest.param(_earlier_comparison, id="an-earlier-comparison"),
    pytest.param(lambda out: out.mkdir(), id="an-empty-folder"),
    pytest.param(lambda out: None, id="a-new-path"),
])
def test_an_earlier_comparison_or_an_empty_or_new_folder_is_accepted_untouched(tmp_path: Path, make: Any) -> None:
    out = tmp_path / "cmp"
    make(out)
    before = snapshot(tmp_path)
    check_compare_target(out, METHODS)
    with pytest.raises(DataError):  # past the check: it goes on to look for the data
        compare(TrainConfig(), out, seeds=1, data=tmp_path / "no-data", device="cpu")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("below", ["notes.txt", "notes.txt/deeper"])
def test_a_compare_target_below_a_file_is_refused(tmp_path: Path, below: str) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / below / "cmp"
    with pytest.raises(ConfigError) as info:
        check_compare_target(out, METHODS)
    assert str(info.value) == f"--out {str(out)!r}: {str(tmp_path / 'notes.txt')!r} is a file, not a folder."
    with pytest.raises(ConfigError) as info:
        check_compare_target(tmp_path / "notes.txt", METHODS)
    assert str(info.value) == (f"--out {str(tmp_path / 'notes.txt')!r} is a file; give a folder for the "
                               "comparison's runs and tables.")
    assert (tmp_path / "notes.txt").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_a_single_seed_prints_its_undefined_spread_as_a_dash(tmp_path: Path) -> None:
    from nas_meta.compare import ACCURACY, _write

    table = pd.DataFrame([{"method": "candidate (maml)", "strategy": "maml", "test_accuracy": 0.9,
                           "test_accuracy_ci95": 0.01, "seed_std": math.nan, "parameters": 1234, "train_seconds": 5.0,
                           "iterations": 10.0, "stopped_by": "iterations"},
                          {"method": "maml (paper settings)", "strategy": "maml", "test_accuracy": 0.8,
                           "test_accuracy_ci95": 0.02, "seed_std": 0.015, "parameters": 1234, "train_seconds": 5.0,
                           "iterations": 10.0, "stopped_by": "iterations"}])
    _write(tmp_path, table, pd.DataFrame(), TrainConfig(), TrainConfig().budget, 10, 1, ACCURACY)
    rows = [line for line in (tmp_path / "comparison.md").read_text().splitlines() if line.startswith("| candidate")
            or line.startswith("| maml")]
    assert rows[0].split(" | ")[2] == "–" and rows[1].split(" | ")[2] == "1.50"
    assert "nan" not in (tmp_path / "comparison.md").read_text()


# -- issue 15: a seconds budget is the same compute for every method ---------------------------------------------------

def _compare_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *flags: str) -> BudgetConfig:
    """The budget `nas-meta compare` hands to compare() for these flags (compare itself not run)."""
    import nas_meta.compare
    from nas_meta.cli import main

    seen: list[BudgetConfig] = []

    def fake_compare(candidate: TrainConfig, out: str, *, budget: BudgetConfig, **kwargs: object) -> pd.DataFrame:
        seen.append(budget)
        Path(out).mkdir()
        (Path(out) / "comparison.md").write_text("the table\n")
        return pd.DataFrame()

    monkeypatch.setattr(nas_meta.compare, "compare", fake_compare)
    config = tmp_path / "cand.yaml"
    config.write_text("name: cand\nbudget: {iterations: 25, seconds: 60}\n")
    main(["compare", str(config), "--out", str(tmp_path / "cmp"), *flags])
    return seen[0]


@pytest.mark.parametrize(("flags", "iterations", "seconds"), [
    (["--budget-seconds", "20"], MAX_ITERATIONS, 20.0),  # seconds alone: the config's cap of 25 is dropped
    (["--budget-seconds", "20", "--budget-iterations", "7"], 7, 20.0),  # both given: whichever comes first
    (["--budget-iterations", "7"], 7, 60.0),  # iterations alone: the config's seconds stay
    ([], 25, 60.0),  # nothing given: the config's budget
])
def test_a_seconds_budget_takes_precedence_over_the_configs_iteration_cap(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: list[str], iterations: int, seconds: float) -> None:
    budget = _compare_budget(monkeypatch, tmp_path, *flags)
    assert (budget.iterations, budget.seconds) == (iterations, seconds)


def test_the_table_says_which_limit_ended_each_method_and_a_seconds_budget_reads_as_seconds(tmp_path: Path) -> None:
    from nas_meta.compare import ACCURACY, _table, _write

    methods = {"candidate (maml)": TrainConfig(), "maml (paper settings)": TrainConfig()}
    runs = [{"method": m, "seed": s, "parameters": 10, "train_seconds": 20.0, "iterations": it, "status": status}
            for m, s, it, status in [("candidate (maml)", 0, 40, "time_budget"), ("candidate (maml)", 1, 41, "time_budget"),
                                     ("maml (paper settings)", 0, 90, "time_budget"),
                                     ("maml (paper settings)", 1, 90, "diverged")]]
    per_episode = {m: [np.full(10, 0.5), np.full(10, 0.6)] for m in methods}
    table = _table(methods, per_episode, runs, ["maml (paper settings)"], ACCURACY)
    assert list(table["stopped_by"]) == ["seconds", "diverged, seconds"]
    _write(tmp_path, table, pd.DataFrame(runs), TrainConfig(), BudgetConfig(iterations=MAX_ITERATIONS, seconds=20), 10, 2,
           ACCURACY)
    md = (tmp_path / "comparison.md").read_text()
    assert "same budget (20 s of meta-training)" in md and "1000000000" not in md
    assert [line.rsplit(" | ", 2)[-1] for line in md.splitlines() if line.startswith("| candidate")] == ["seconds |"]


@pytest.mark.slow
def test_compare_with_a_seconds_budget_trains_every_method_for_those_seconds(tmp_path: Path, omniglot: Path) -> None:
    config = tmp_path / "cand.yaml"
    config.write_text("name: cand\ntask: {ways: 5, shots: 1, query: 2}\narchitecture: {channels: 16}\n"
                      "learner: {strategy: fomaml, meta_batch: 4, test_steps: 3}\nbudget: {iterations: 2}\n"
                      "evaluation: {dev_episodes: 5, every: 100}\n")
    done = nas_meta_cli("compare", str(config), "--seeds", "1", "--episodes", "10", "--budget-seconds", "2", "--out",
                        str(tmp_path / "cmp"), "--data", str(omniglot), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "cmp" / "runs.csv")
    assert (runs["status"] == "time_budget").all() and (runs["train_seconds"] >= 2).all()
    assert (runs["iterations"] > 2).all()  # the config's cap of 2 no longer ends them
    assert (pd.read_csv(tmp_path / "cmp" / "comparison.csv")["stopped_by"] == "seconds").all()


@pytest.mark.slow
def test_a_tuned_baseline_is_named_by_its_file_not_as_paper_settings(tmp_path: Path, omniglot: Path) -> None:
    config = tmp_path / "cand.yaml"
    config.write_text("name: cand\ntask: {ways: 20, shots: 1, query: 1}\narchitecture: {blocks: 2, channels: 8}\n"
                      "learner: {strategy: pretrain, meta_batch: 2, test_steps: 1}\nbudget: {iterations: 1}\n")
    done = nas_meta_cli("-q", "compare", str(config), "--baselines", "maml-cpu,maml", "--seeds", "1", "--episodes", "4",
                        "--out", str(tmp_path / "cmp"), "--data", str(omniglot))
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert list(table["method"]) == ["candidate (pretrain)", "maml-cpu (maml-cpu-20w1s.yaml)", "maml (paper settings)"]
    assert list(table["iterations"]) == [1, 1, 1]  # the tuned config meta-trained on its 5-way tasks, scored at 20 ways


def test_a_comparison_run_again_after_an_interrupt_reuses_its_finished_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A preempted SLURM job requeued: each run that ended by itself, with the very config, is loaded and scored
    again, not trained again; an interrupted run, or one of another config, is trained again."""
    candidate = train_config_from_dict({
        "name": "cand", "task": {"family": "sinusoid", "shots": 5, "query": 5}, "architecture": {"channels": 8},
        "learner": {"strategy": "fomaml"}, "evaluation": {"dev_episodes": 4, "every": 100}})
    out = tmp_path / "cmp"
    options = {"baselines": ["maml"], "seeds": 2, "episodes": 8, "budget": BudgetConfig(iterations=3),
               "device": "cpu"}
    first = compare(candidate, out, **options)  # type: ignore[arg-type]
    interrupted = out / "maml" / "seed-1" / "metrics.json"
    record = json.loads(interrupted.read_text())
    record["status"] = "interrupted"  # as a SIGTERM mid-run leaves it (the checksums cover weights and config only)
    interrupted.write_text(json.dumps(record))
    (out / "comparison.csv").unlink()
    with caplog.at_level(logging.INFO, logger="nas_meta.checkpoint"):
        again = compare(candidate, out, **options)  # type: ignore[arg-type]
    reused = sorted(r.getMessage().split(":")[0] for r in caplog.records if "reusing its finished run" in r.getMessage())
    assert reused == [str(out / "candidate" / "seed-0"), str(out / "candidate" / "seed-1"), str(out / "maml" / "seed-0")]
    assert json.loads(interrupted.read_text())["status"] == "completed"  # trained again
    scores = ["method", "test_mse", "test_mse_ci95", "seed_std", "iterations", "diff_vs_maml"]
    pd.testing.assert_frame_equal(first[scores], again[scores])  # the same learners (seeded) on the same test tasks
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nas_meta.checkpoint"):
        compare(candidate, out, **{**options, "budget": BudgetConfig(iterations=4)})  # type: ignore[arg-type]
    assert "reusing" not in caplog.text  # another budget: another run
