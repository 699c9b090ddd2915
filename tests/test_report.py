"""Plotly views of study results: the report's figures, the self-contained page, the comparison bars (fast)."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import plotly.graph_objects as go
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from nas_meta.export import trials_table
from nas_meta.report import accuracy_by_strategy, comparison_figure, figures_html, study_figures, study_report_html

DISTRIBUTIONS = {"learner.strategy": CategoricalDistribution(["maml", "fomaml", "reptile"]),
                 "learner.inner_lr": FloatDistribution(0.01, 1.0, log=True)}
BASE_TITLES = ["Optimization history", "Intermediate dev losses (pruning)", "Parallel coordinates",
               "Parameter importances"]


def synthetic_study(complete: int, *, lr: bool = True, directions: list[str] | None = None,
                    pruned: int = 0) -> optuna.Study:
    study = optuna.create_study(study_name="syn", directions=directions)
    study.set_user_attr("protocol", "vinyals")
    study.set_user_attr("objectives", "dev_loss,parameters")
    dists = DISTRIBUTIONS if lr else {"learner.strategy": DISTRIBUTIONS["learner.strategy"]}
    for i in range(complete + pruned):
        strategy = ["maml", "fomaml", "reptile"][i % 3]
        params = {"learner.strategy": strategy, "learner.inner_lr": 0.05 * (i + 1)} if lr else {"learner.strategy": strategy}
        loss = 1.0 / (i + 1)
        state = TrialState.COMPLETE if i < complete else TrialState.PRUNED
        study.add_trial(create_trial(
            state=state, value=loss if state == TrialState.COMPLETE and not directions else None,
            values=[loss, 1000.0 * (i + 1)] if state == TrialState.COMPLETE and directions else None,
            params=params, distributions=dists, intermediate_values={4: 2 * loss, 8: loss},
            user_attrs={"strategy": strategy, "dev_accuracy": 0.5 + 0.1 * i}))
    return study


def test_study_figures_are_titled() -> None:
    study = synthetic_study(4)
    figures = study_figures(study, trials_table(study))
    titles = [title for title, _ in figures]
    assert titles == [*BASE_TITLES, "Learning rates", "Dev accuracy by strategy"]
    assert all(figure.layout.title.text == title for title, figure in figures)
    (losses,) = [trace for trace in figures[0][1].data if trace.name == "dev loss"]
    assert list(losses.x) == [0, 1, 2, 3] and list(losses.y) == pytest.approx([1.0, 0.5, 1 / 3, 0.25])


def test_study_figures_leave_out_what_the_study_cannot_draw() -> None:
    no_lr = synthetic_study(2, lr=False)
    assert "Learning rates" not in [t for t, _ in study_figures(no_lr, trials_table(no_lr))]
    only_pruned = synthetic_study(0, pruned=2)
    titles = [t for t, _ in study_figures(only_pruned, trials_table(only_pruned))]
    assert "Dev accuracy by strategy" not in titles and titles[:1] == ["Optimization history"]
    empty = optuna.create_study()
    assert "Dev accuracy by strategy" not in [t for t, _ in study_figures(empty, trials_table(empty))]


@pytest.mark.filterwarnings("ignore:PedAnovaImportanceEvaluator computes the importances")
def test_multi_objective_study_gets_a_pareto_front() -> None:
    study = synthetic_study(3, directions=["minimize", "minimize"])
    titles = [t for t, _ in study_figures(study, trials_table(study))]
    assert titles[-2:] == ["Pareto front", "Dev accuracy by strategy"] and "Optimization history" in titles


def test_figures_html_inlines_plotly_once_with_one_heading_per_figure() -> None:
    figures = [(f"figure <{i}>", go.Figure(go.Bar(x=["a"], y=[i]))) for i in range(3)]
    page = figures_html("study <x> & y", figures, intro="<p>intro</p>")
    assert page.count("* plotly.js v") == 1  # the library's header comment: the bundle appears once
    assert page.count("<h2>") == 3 and page.count("Plotly.newPlot") == 3
    assert "<h2>figure &lt;1&gt;</h2>" in page and "<title>study &lt;x&gt; &amp; y</title>" in page
    assert page.index("<p>intro</p>") < page.index("<h2>")
    alone = figures_html("one", figures[:1])
    assert len(page) - len(alone) < 0.1 * len(alone)  # two more figures cost far less than another bundle


def test_study_report_html_states_protocol_and_counts() -> None:
    study = synthetic_study(2, pruned=1)
    page = study_report_html(study, trials_table(study))
    assert "<title>nas-meta study syn</title>" in page
    assert "Protocol <code>vinyals</code>, 3 trials (3 finished)." in page


@pytest.mark.parametrize(
    "table",
    [
        pd.DataFrame(columns=["number", "state", "strategy", "dev_accuracy"]),
        pd.DataFrame({"number": [0, 1], "state": ["PRUNED", "FAIL"], "strategy": ["maml", "maml"],
                      "dev_accuracy": [0.5, None]}),
        pd.DataFrame({"number": [0], "state": ["COMPLETE"], "strategy": ["maml"], "dev_accuracy": [math.nan]}),
    ],
)
def test_accuracy_by_strategy_refuses_a_table_without_completed_trials(table: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="no completed trial"):
        accuracy_by_strategy(table)


def test_accuracy_by_strategy_plots_each_completed_trial() -> None:
    table = pd.DataFrame({"number": [0, 1, 2, 3], "state": ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"],
                          "strategy": ["maml", "reptile", "maml", "maml"], "dev_accuracy": [0.9, 0.4, 0.1, 0.7]})
    figure = accuracy_by_strategy(table)
    points = {trace.name: sorted(trace.y) for trace in figure.data}
    assert points == {"maml": [0.7, 0.9], "reptile": [0.4]}  # the pruned trial is not drawn


def test_comparison_figure_bars_are_percentages_with_ci_error_bars() -> None:
    table = pd.DataFrame({"method": ["candidate (fomaml)", "maml (paper settings)"], "test_accuracy": [0.9123, 0.85],
                          "test_accuracy_ci95": [0.012, 0.02]})
    figure = comparison_figure(table)
    (bar,) = figure.data
    assert list(bar.x) == ["candidate (fomaml)", "maml (paper settings)"]
    assert list(bar.y) == pytest.approx([91.23, 85.0])
    assert list(bar.error_y.array) == pytest.approx([1.2, 2.0])
    assert figure.layout.yaxis.title.text == "test accuracy (%)"
