"""Plotly views of study results: the report page's figures, and the comparison figure.

Figures are drawn from the study (Optuna's own plot functions) and from the trials table; nothing here
computes results.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import optuna
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from optuna.trial import TrialState

logger = logging.getLogger(__name__)


def _learning_rate_params(study: optuna.Study) -> list[str]:
    names = {k for t in study.get_trials(deepcopy=False) for k in t.params}
    return sorted(n for n in names if n.startswith(("learner.inner_lr", "learner.outer_lr", "learner.meta_step")))


def study_figures(study: optuna.Study, table: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    """The report's figures, each with a title; figures that need more trials than the study has are left out."""
    from optuna import visualization as vis

    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    name = "dev loss"
    makers: list[tuple[str, Any]] = [
        ("Optimization history", lambda: vis.plot_optimization_history(study, target=target, target_name=name)),
        ("Intermediate dev losses (pruning)", lambda: vis.plot_intermediate_values(study)),
        ("Parallel coordinates", lambda: vis.plot_parallel_coordinate(study, target=target, target_name=name)),
        ("Parameter importances", lambda: vis.plot_param_importances(study, target=target, target_name=name)),
    ]
    lr_params = _learning_rate_params(study)
    if lr_params:
        makers.append(("Learning rates", lambda: vis.plot_slice(study, params=lr_params, target=target, target_name=name)))
    if multi:
        makers.append(("Pareto front", lambda: vis.plot_pareto_front(study, target_names=str(
            study.user_attrs.get("objectives", "")).split(",") or None)))
    makers.append(("Dev accuracy by strategy", lambda: accuracy_by_strategy(table)))
    figures = []
    for title, make in makers:
        try:
            figure = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importances need 2+ complete trials
            logger.info("report: %s left out (%s)", title, err)
            continue
        if figure is not None:  # sized by its container (a dashboard card, the report page), title given once
            figure.update_layout(title=title, autosize=True, width=None, height=440,
                                 margin={"l": 50, "r": 20, "t": 50, "b": 50})
            figures.append((title, figure))
    return figures


def accuracy_by_strategy(table: pd.DataFrame) -> go.Figure:
    done = table[(table["state"] == "COMPLETE") & table["dev_accuracy"].notna()] if len(table) else table
    if not len(done):
        raise ValueError("no completed trial")
    return px.strip(done, x="strategy", y="dev_accuracy", hover_data=["number"], color="strategy",
                    labels={"dev_accuracy": "dev accuracy", "strategy": "initialization strategy"})


def figures_html(title: str, figures: list[tuple[str, go.Figure]], intro: str = "") -> str:
    """One self-contained HTML page: plotly.js inlined once, then every figure."""
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}</style></head><body>"),
             f"<h1>{html.escape(title)}</h1>", intro]
    for i, (name, figure) in enumerate(figures):
        parts.append(f"<h2>{html.escape(name)}</h2>")  # the heading names the figure; the figure does not again
        untitled = go.Figure(figure).update_layout(title=None)
        parts.append(untitled.to_html(full_html=False, include_plotlyjs=(i == 0), config={"responsive": True}))
    parts.append("</body></html>")
    return "\n".join(parts)


def study_report_html(study: optuna.Study, table: pd.DataFrame) -> str:
    """The export's ``report.html``."""
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
    intro = (f"<p>Protocol <code>{html.escape(str(study.user_attrs.get('protocol', '?')))}</code>, "
             f"{len(table)} trials ({finished} finished). Objective: mean query loss on the fixed dev tasks "
             "after adaptation (lower is better).</p>")
    return figures_html(f"nas-meta study {study.study_name}", study_figures(study, table), intro)


def attach_to_dashboard(study: optuna.Study, table: pd.DataFrame) -> int:
    """Save the report figures on the study so optuna-dashboard shows them; returns how many were saved."""
    try:
        from optuna_dashboard import save_plotly_graph_object
    except ImportError:
        return 0
    figures = study_figures(study, table)
    for title, figure in figures:
        slug = "nas-meta-" + "".join(c if c.isalnum() else "-" for c in title.lower())
        save_plotly_graph_object(study, figure, graph_object_id=slug)  # same id: re-attaching overwrites
    return len(figures)


def comparison_figure(table: pd.DataFrame, score: str = "accuracy", percent: bool = True) -> go.Figure:
    """Bar chart of the test score (``test_<score>`` column: accuracy, or the MSE of a regression family) per method
    with 95% CI error bars."""
    scale = 100 if percent else 1
    figure = go.Figure(go.Bar(x=table["method"], y=scale * table[f"test_{score}"],
                              error_y={"type": "data", "array": scale * table[f"test_{score}_ci95"]}))
    label = "accuracy" if score == "accuracy" else score.upper()
    figure.update_layout(yaxis_title=f"test {label}{' (%)' if percent else ''}", xaxis_title="method")
    return figure
