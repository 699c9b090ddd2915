"""Study results as data: a trials table (CSV, Parquet), the best learner's training config, a Markdown summary.

Every file is written under a temporary name and renamed, so a reader never sees a half-written export,
and an export of a study that is still running is a consistent snapshot of its finished trials.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from .checkpoint import OutputKind, atomic_write, check_output_folder
from .config import check_arguments, dump_yaml
from .errors import CheckpointError, ConfigError
from .report import study_report_html
from .runtime import check_interrupt, exchange_paths, public_mode
from .storage import StorageHandle, as_handle
from .studies import StudyAttr, TrialAttr, existing_study, fetch_trial_learner, trial_config

logger = logging.getLogger(__name__)

USER_COLUMNS = (TrialAttr.STRATEGY, TrialAttr.BASELINE, TrialAttr.DEV_LOSS, TrialAttr.DEV_ACCURACY,
                TrialAttr.DEV_ACCURACY_CI95, TrialAttr.PARAMETERS, TrialAttr.LATENCY_MS, TrialAttr.ITERATIONS,
                TrialAttr.TRAIN_SECONDS, TrialAttr.DEVICE, TrialAttr.STATUS, TrialAttr.REASON)


def objective_names(study: optuna.Study) -> list[str]:
    names = str(study.user_attrs.get(StudyAttr.OBJECTIVES) or "dev_loss").split(",")
    return names[: len(study.directions)] if len(names) >= len(study.directions) else [f"value_{i}" for i in range(len(study.directions))]


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, objective value(s), duration, flattened params, user attributes."""
    names = objective_names(study)
    rows: list[dict[str, Any]] = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for i, name in enumerate(names):
            row[name] = t.values[i] if t.values is not None else None
        row["datetime_start"] = t.datetime_start
        row["duration_s"] = t.duration.total_seconds() if t.duration is not None else None
        for key in USER_COLUMNS:
            row.setdefault(key, t.user_attrs.get(key))  # an objective's column holds the objective's value
        for key, value in sorted(t.params.items()):
            row[f"params.{key}"] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        columns = ["number", "state", *names, "datetime_start", "duration_s", *USER_COLUMNS]
        frame = pd.DataFrame(columns=list(dict.fromkeys(columns)))
    return frame


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (single objective) or the Pareto front (multi-objective); empty if none completed."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    return [study.best_trial] if len(study.directions) == 1 else list(study.best_trials)


def config_yaml(study: optuna.Study, trial: FrozenTrial) -> str:
    header = (f"# Trial {trial.number} of study {study.study_name!r} ({trial.user_attrs.get('strategy')}): "
              f"dev loss {trial.values[0]:.4f}, dev accuracy {trial.user_attrs.get('dev_accuracy', float('nan')):.4f}.\n"
              "# Retrain with: nas-meta train THIS_FILE --out DIR; compare with: nas-meta compare THIS_FILE --out DIR\n")
    return header + dump_yaml(trial_config(study, trial).to_dict())


def summary_markdown(study: optuna.Study, table: pd.DataFrame) -> str:
    """The study in Markdown: counts by state, the best trial, the complete trials ranked by their objective,
    the pruned ones apart (their losses are partial, so they are not ranked), and the baselines."""
    names = objective_names(study)
    states = ", ".join(f"{k}: {v}" for k, v in table["state"].value_counts().items()) if len(table) else "none"
    lines = [f"# Study `{study.study_name}`", "",
             (f"- protocol: `{study.user_attrs.get('protocol', '?')}`; study file: "
              f"`{study.user_attrs.get('study_file_name', '?')}`; nas-meta {study.user_attrs.get('nas_meta_version', '?')}"),
             f"- objectives: {', '.join(names)} (minimised)",
             f"- trials: {len(table)} ({states})", ""]
    best = best_trials(study)
    if best:
        lines += ["## Best trial" if len(best) == 1 else "## Pareto front", ""]
        for t in best:
            accuracy = t.user_attrs.get(TrialAttr.DEV_ACCURACY)
            lines.append(f"- trial {t.number} ({t.user_attrs.get(TrialAttr.STRATEGY)}): " + ", ".join(
                f"{n} {_cell(v)}" for n, v in zip(names, t.values)) + f", dev accuracy {_cell(accuracy)}")
        lines.append("")
    columns = ["number", *names, "dev_accuracy", "dev_accuracy_ci95", "strategy", "parameters", "iterations", "baseline"]
    complete = table[table["state"] == "COMPLETE"] if len(table) else table
    if len(complete):
        ranked = complete.sort_values(names[0]).head(10)
        lines += [f"## Top {len(ranked)} complete trials, by {names[0]}", "",
                  _markdown_table(ranked[[c for c in columns if c in ranked.columns]]), ""]
    pruned = table[table["state"] == "PRUNED"] if len(table) else table
    if len(pruned):
        lines += [f"## Pruned trials ({len(pruned)}; stopped early, so not ranked)", "",
                  _markdown_table(pruned[[c for c in ("number", "strategy", "iterations", "reason") if c in pruned.columns]]),
                  ""]
    baselines = table[table["baseline"].notna()] if "baseline" in table.columns else table.iloc[0:0]
    if len(baselines):
        lines += ["## Baselines (enqueued as the first trials, scored like every candidate)", "",
                  _markdown_table(baselines[[c for c in ["number", "state", *columns[1:]] if c in baselines.columns]]), ""]
    return "\n".join(lines)


INTEGER_COLUMNS = ("number", "parameters", "iterations")


def _cell(v: Any, column: str = "") -> str:
    """A table cell: blank for missing, integers as integers (pandas keeps them as floats beside blanks)."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if column in INTEGER_COLUMNS and isinstance(v, (int, float)) and float(v).is_integer():
        return f"{int(v):,}" if column == "parameters" else str(int(v))
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(_cell(v, c) for c, v in zip(frame.columns, row)) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body])


EXPORT_FILES = ("trials.csv", "trials.parquet", "best.yaml", "best", "pareto", "report.html", "summary.md")


EXPORT_OUTPUT = OutputKind("for the export", "files that are not an export", "an earlier export",
                           lambda entries: [p.name for p in entries if p.name not in EXPORT_FILES])


def check_export_target(out: Path) -> None:
    """``--out`` must be a new or empty folder, or an earlier export (replaced as a whole).

    Raises:
        ConfigError: ``out`` is a file, lies below a file, or holds something else.
    """
    check_output_folder(out, EXPORT_OUTPUT)


def export_study(study_name: str, storage: str, out: str | Path) -> dict[str, Any]:
    """Write ``trials.csv``, ``trials.parquet``, ``best.yaml`` and ``best/`` (the best learner's folder, which
    ``load_learner`` opens; or ``pareto/`` configs), ``report.html``, ``summary.md``.

    The export is written into a temporary folder beside ``out`` and moved into place when complete, so a failed
    export leaves nothing half-written. A study without trials gives a valid, empty export.

    Raises:
        ConfigError: unknown study or storage (the message lists the studies that exist); ``out`` is a file or
            holds other files.
    """
    check_arguments((isinstance(out, (str, Path)), "out", out, "a folder path (str or pathlib.Path)"),
                    (isinstance(study_name, str), "study_name", study_name, "a study's name (a string)"))
    out = Path(out)
    check_export_target(out)
    handle = as_handle(storage, read_only=True)
    study = existing_study(handle, study_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(staging, public_mode(directory=True))
    try:
        written, table, best = _write_export(study, staging)
        if len(best) == 1 and _copy_best_learner(handle, study, best[0], staging / "best"):
            written.append("best")
        check_interrupt()  # a Ctrl-C or SIGTERM so far leaves the earlier export as it was
        if not _swap_in(staging, out):
            _replace_file_by_file(staging, out, written)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"study": study_name, "out": str(out), "trials": len(table), "files": written,
            "best_trials": [t.number for t in best]}


def _swap_in(staging: Path, out: Path) -> bool:
    """Put the finished export in ``out``'s place in one atomic step (a new folder renamed, or the two folders
    exchanged), so that a process killed at any moment leaves the earlier export or this one, never a mix; it keeps
    ``out``'s mode and group. False (nothing done) where that cannot be: ``out`` is a symlink, holds files of its own
    beside an earlier export (hidden ones, which stay), holds the working folder, or the system cannot exchange
    two folders atomically."""
    if out.is_symlink() or (out.is_dir() and any(p.name not in EXPORT_FILES for p in out.iterdir())):
        return False
    cwd = Path.cwd().resolve()
    if out.resolve() in (cwd, *cwd.parents):
        return False
    if not out.exists():
        os.rename(staging, out)
        return True
    try:
        old = out.stat()
        os.chmod(staging, stat.S_IMODE(old.st_mode))
        if staging.stat().st_gid != old.st_gid:
            os.chown(staging, -1, old.st_gid)
    except OSError:
        return False
    return exchange_paths(staging, out)  # staging now holds the earlier export: the caller removes it


def _replace_file_by_file(staging: Path, out: Path, written: list[str]) -> None:
    out.mkdir(exist_ok=True)
    for name in EXPORT_FILES:  # what this export does not write must not survive from an earlier one
        stale = out / name
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists() and name not in written:
            stale.unlink()
    for name in written:
        os.replace(staging / name, out / name)


def _copy_best_learner(handle: StorageHandle, study: optuna.Study, trial: FrozenTrial, target: Path) -> bool:
    """Copy the best trial's learner folder from the artifact store; False (and a warning) when it kept none."""
    try:
        shutil.copytree(fetch_trial_learner(handle, study.study_name, trial.number), target)
    except (ConfigError, CheckpointError) as err:
        logger.warning("best/ left out: %s", err)
        return False
    return True


def _write_export(study: optuna.Study, out: Path) -> tuple[list[str], pd.DataFrame, list[FrozenTrial]]:
    table = trials_table(study)
    atomic_write(out / "trials.csv", table.to_csv(index=False).encode())
    written = ["trials.csv"]
    try:
        buffer = io.BytesIO()
        table.astype({c: "string" for c in table.columns if table[c].dtype == object}).to_parquet(buffer, index=False)
        atomic_write(out / "trials.parquet", buffer.getvalue())
        written.append("trials.parquet")
    except ImportError:
        logger.warning("trials.parquet skipped: install pyarrow (pip install 'nas-meta[export]')")
    best = best_trials(study)
    if len(study.directions) == 1 and best:
        atomic_write(out / "best.yaml", config_yaml(study, best[0]).encode())
        written.append("best.yaml")
    elif best:
        for t in best:
            atomic_write(out / "pareto" / f"trial-{t.number}.yaml", config_yaml(study, t).encode())
        written.append("pareto")
    atomic_write(out / "report.html", study_report_html(study, table).encode())
    atomic_write(out / "summary.md", summary_markdown(study, table).encode())
    written += ["report.html", "summary.md"]
    return written, table, best
