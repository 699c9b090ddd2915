"""The quality matrix: test accuracy against CPU minutes of meta-training, per Omniglot setting and strategy.

One run per (setting, strategy) gives its whole curve: the learner is scored on the setting's 600 fixed test
episodes (``maml`` protocol) every ``--every`` minutes of meta-training and at the end; the scoring is not counted
as training time (``meta_train`` leaves out the time its caller holds a record). Configs: the shipped baseline
``studies/baselines/<strategy>-<setting>.yaml`` where there is one, else the strategy's 5w1s recipe (its own 5w1s
config, or MAML's with the strategy swapped) on the setting's episodes: see :func:`run_config`. The published numbers are
drawn beside the curves (MAML: Finn et al. 2017; Reptile: Nichol et al. 2018, transductive).

    python benchmarks/quality_matrix.py [--settings 5w1s,20w1s] [--strategies maml,fomaml,reptile,metasgd,pretrain]
                                        [--minutes 15] [--every 3] [--out benchmarks/results/quality_matrix]
                                        [--data ../shared/data/omniglot] [--dry-run] [--report]

Each run's raw records go to ``OUT/<setting>-<strategy>.json``; the table of every run in ``OUT`` (this
invocation's and earlier ones') to ``quality_matrix.md``; their curves to ``quality_matrix.html``; ``--report``
rebuilds both from the JSON files alone. Run it alone on the machine: minutes of CPU are what it measures. ``--dry-run`` (CI): tiny
networks, seconds instead of minutes, a few episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from nas_meta.config import MAX_ITERATIONS, BudgetConfig, DataConfig, TrainConfig, load_train_config
from nas_meta.training import End, Step, Workspace, build_learner, evaluate, load_workspace, meta_train

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {  # test accuracy (%), 5w1s / 5w5s / 20w1s / 20w5s
    "maml": {"5w1s": 98.7, "5w5s": 99.9, "20w1s": 95.8, "20w5s": 98.9},
    "reptile": {"5w1s": 97.68, "5w5s": 99.48, "20w1s": 89.43, "20w5s": 97.12},
}
SETTINGS = ("5w1s", "5w5s", "20w1s", "20w5s")
STRATEGIES = ("maml", "fomaml", "reptile", "metasgd", "pretrain")


def run_config(setting: str, strategy: str) -> TrainConfig:
    """The shipped config for ``strategy`` at ``setting``; else the strategy's 5w1s recipe moved to the setting's task.

    The 5w1s recipe is ``<strategy>-5w1s.yaml`` where one is shipped (Meta-SGD, pre-training, Reptile), else
    ``maml-5w1s.yaml`` with the strategy swapped (first-order MAML); its task becomes the one of
    ``maml-<setting>.yaml`` (ways, shots, query), everything else (network, rates, steps, meta-batch) is kept.
    """
    baselines = ROOT / "studies" / "baselines"
    own = baselines / f"{strategy}-{setting}.yaml"
    if own.exists():
        return load_train_config(own)
    recipe = baselines / f"{strategy}-5w1s.yaml"
    if recipe.exists():
        base = load_train_config(recipe)
    else:
        base = load_train_config(baselines / "maml-5w1s.yaml", [f"learner.strategy={strategy}"])
    task = load_train_config(baselines / f"maml-{setting}.yaml").task
    return dataclasses.replace(base, name=f"{strategy}-{setting}", task=task)


def curve(config: TrainConfig, seconds: float, every: float, episodes: int, workspace: Workspace,
          device: torch.device) -> dict[str, Any]:
    """Meta-train ``config`` for ``seconds``, scoring the fixed test episodes every ``every`` seconds of training."""
    config = dataclasses.replace(config, budget=BudgetConfig(iterations=MAX_ITERATIONS, seconds=seconds))
    learner = build_learner(config, workspace.label_space, device, seed=config.seed)
    test = workspace.task_sampler("test", config.task).fixed(episodes, config.evaluation.seed)
    points: list[dict[str, float]] = []

    def score(record: Step | End) -> None:
        started = time.perf_counter()
        result = evaluate(learner, test, batch=config.evaluation.batch)
        points.append({"train_seconds": record.train_seconds, "iterations": record.iteration if isinstance(
            record, Step) else record.iterations, "accuracy": result.accuracy, "accuracy_ci95": result.accuracy_ci95,
            "scoring_seconds": time.perf_counter() - started})
        print(f"  {config.name}: {100 * result.accuracy:.2f}% ± {100 * result.accuracy_ci95:.2f} after "
              f"{record.train_seconds / 60:.1f} min ({points[-1]['iterations']:.0f} meta-iterations)", flush=True)

    next_mark = every
    end: End | None = None
    for record in meta_train(learner, workspace.task_sampler("train", config.task.training_task()), config.budget,
                             meta_batch=config.learner.meta_batch, generator=torch.Generator().manual_seed(config.seed + 1),
                             dev=None):
        if isinstance(record, Step) and record.train_seconds >= next_mark and record.train_seconds < seconds:
            score(record)  # held by this caller: not counted as training
            next_mark += every
        elif isinstance(record, End):
            end = record
    assert end is not None
    score(end)
    return {"config": config.to_dict(), "status": end.status, "points": points}


DRY_RUN_TIMES = (2.0, 1.0, 4)  # seconds of training, seconds between scorings, test episodes


def dry_run_config(config: TrainConfig) -> TrainConfig:
    """``config`` shrunk for a dry run (CI): a tiny network, a small meta-batch, one adaptation step."""
    return dataclasses.replace(
        config, architecture=dataclasses.replace(config.architecture, channels=8, blocks=2),
        learner=dataclasses.replace(config.learner, meta_batch=2, test_steps=1),
        evaluation=dataclasses.replace(config.evaluation, batch=4))


def add_curve_arguments(parser: argparse.ArgumentParser, *, minutes: float, every: float, out: str) -> None:
    """The options of a curve run: its length, scoring, data, device, output folder and dry run."""
    parser.add_argument("--minutes", type=float, default=minutes, help=f"meta-training per run (default: {minutes:g})")
    parser.add_argument("--every", type=float, default=every, help=f"minutes between test scorings (default: {every:g})")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / out))
    parser.add_argument("--dry-run", action="store_true", help="tiny networks, seconds not minutes (CI)")


def figure_html(runs: dict[str, dict[str, Any]]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    settings = sorted({key.split("-")[0] for key in runs}, key=SETTINGS.index)
    fig = make_subplots(rows=1, cols=len(settings), subplot_titles=settings)
    for col, setting in enumerate(settings, start=1):
        for key, run in runs.items():
            if key.split("-")[0] != setting:
                continue
            points = run["points"]
            fig.add_trace(go.Scatter(x=[p["train_seconds"] / 60 for p in points],
                                     y=[100 * p["accuracy"] for p in points], mode="lines+markers",
                                     name=key, legendgroup=key.split("-", 1)[1]), row=1, col=col)
        for strategy, numbers in PUBLISHED.items():
            fig.add_hline(y=numbers[setting], line_dash="dash", annotation_text=f"{strategy} (paper)", row=1, col=col)
    fig.update_layout(title="Test accuracy against minutes of CPU meta-training (600 fixed test episodes)",
                      yaxis_title="test accuracy (%)")
    return str(fig.to_html(include_plotlyjs="cdn"))


def table(runs: dict[str, dict[str, Any]]) -> str:
    lines = ["| setting | strategy | minutes | meta-iterations | test accuracy (± 95% CI) | published |",
             "|---|---|---|---|---|---|"]
    for key, run in runs.items():
        setting, strategy = key.split("-", 1)
        last = run["points"][-1]
        published = PUBLISHED.get(strategy, {}).get(setting)
        lines.append(f"| {setting} | {strategy} | {last['train_seconds'] / 60:.1f} | {last['iterations']:.0f} | "
                     f"{100 * last['accuracy']:.2f}% ± {100 * last['accuracy_ci95']:.2f} | "
                     f"{'-' if published is None else f'{published}%'} |")
    return "\n".join(lines)


def collected_runs(out: Path) -> dict[str, dict[str, Any]]:
    """Every run recorded in ``out`` (``<setting>-<strategy>.json``), by setting in :data:`SETTINGS` order."""
    runs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json") if p.stem.split("-")[0] in SETTINGS}
    return dict(sorted(runs.items(), key=lambda kv: (SETTINGS.index(kv[0].split("-")[0]), kv[0])))


def write_report(out: Path) -> dict[str, dict[str, Any]]:
    runs = collected_runs(out)
    (out / "quality_matrix.md").write_text(table(runs) + "\n")
    (out / "quality_matrix.html").write_text(figure_html(runs))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="5w1s,20w1s")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    add_curve_arguments(parser, minutes=15.0, every=3.0, out="quality_matrix")
    parser.add_argument("--report", action="store_true", help="only rebuild the table and figure from OUT's runs")
    args = parser.parse_args()
    if args.report:
        print(table(write_report(Path(args.out))))
        return
    seconds, every, episodes = args.minutes * 60, args.every * 60, args.episodes
    if args.dry_run:
        seconds, every, episodes = DRY_RUN_TIMES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    workspaces: dict[DataConfig, Workspace] = {}
    runs = collected_runs(out)
    for setting in args.settings.split(","):
        for strategy in args.strategies.split(","):
            config = run_config(setting, strategy)
            if args.dry_run:
                config = dry_run_config(config)
            print(f"{setting} {strategy}: {seconds / 60:.1f} min", flush=True)
            if config.data not in workspaces:  # Omniglot loaded once per data setting, not once per run
                workspaces[config.data] = load_workspace(config, args.data, device)
            run = curve(config, seconds, every, episodes, workspaces[config.data], device)
            (out / f"{setting}-{strategy}.json").write_text(json.dumps(run, indent=2))
            runs = write_report(out)  # after every run: a stopped run keeps these
    print(table(runs))


if __name__ == "__main__":
    main()
