"""Saving and loading a trained learner folder: ``config.yaml``, ``weights.safetensors``, ``metrics.json``.

Weights use safetensors (no pickle: loading never executes code). The SHA-256 of the weights and of
``config.yaml`` are recorded in ``metrics.json``, so a tampered or foreign weights file, or an edited config,
is refused; weights must be finite float32 tensors. Every file is written to a temporary name and renamed,
so a folder is never left half-written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import TrainConfig, dump_yaml, read_yaml, train_config_from_dict
from .errors import CheckpointError, ConfigError
from .learners import get_learner
from .runtime import public_mode
from .training import Record, Result, RunMetrics

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
METRICS_FILE = "metrics.json"
FORMAT = "nas-meta-learner/2"  # /2 records the config's SHA-256 too
READABLE_FORMATS = ("nas-meta-learner/1", FORMAT)


@dataclasses.dataclass(frozen=True)
class OutputKind:
    """What a command writes into its ``--out`` folder, for :func:`check_output_folder`'s messages and rules."""

    purpose: str  # "to save the learner in"
    others: str  # how files that do not belong are called: "other files"
    earlier: str  # what may be replaced: "a learner folder"
    foreign: Callable[[list[Path]], list[str]]  # of a folder's visible entries, the names that do not belong


def check_output_folder(folder: Path, kind: OutputKind, option: str = "--out") -> None:
    """Check, before any work, that an output can be written to ``folder``: it does not exist yet, is empty, or
    is an earlier output of the same kind; it is not a file, a broken link, below a file, or unwritable.

    Raises:
        ConfigError: the message names the option, the folder and what is wrong.
    """
    if folder.is_symlink() and not folder.exists():
        raise ConfigError(f"{option} {str(folder)!r} is a broken symbolic link; give a folder {kind.purpose}.")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {str(folder)!r} is a file; give a folder {kind.purpose}.")
    blocking = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"{option} {str(folder)!r}: {str(blocking)!r} is a file, not a folder.")
    if folder.is_dir():
        others = sorted(kind.foreign([p for p in folder.iterdir() if not p.name.startswith(".")]))
        if others:
            shown = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
            raise ConfigError(f"{option} {str(folder)!r} holds {kind.others} ({shown}); give a new or empty folder, "
                              f"or {kind.earlier} to replace.")
    parent = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{option} {str(folder)!r}: {str(parent)!r} is not writable.")


def _not_a_learner(entries: list[Path]) -> list[str]:
    names = [p.name for p in entries]
    return [] if not names or {CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE} <= set(names) else names


LEARNER_OUTPUT = OutputKind("to save the learner in", "other files", "a learner folder", _not_a_learner)


def check_learner_target(folder: str | Path, option: str = "--out") -> Path:
    """Check, before any training, that a learner can be saved to ``folder`` (:func:`check_output_folder`): it does
    not exist yet, is empty, or is a learner folder to replace.

    Raises:
        ConfigError: ``folder`` is a file, holds other files, or cannot be created.
    """
    try:
        here, target = Path.cwd().resolve(), Path(folder).resolve()
    except (OSError, RuntimeError):  # no current folder, a loop of links: left to check_output_folder
        pass
    else:
        if target == here or target in here.parents:  # saving renames the whole folder
            raise ConfigError(f"{option} {str(folder)!r} is the current folder{'' if target == here else ' or holds it'}; "
                              f"a learner is saved as a folder of its own: give one below it, such as {option} learner.")
    check_output_folder(Path(folder), LEARNER_OUTPUT, option)
    return Path(folder)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.chmod(tmp, public_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_learner(folder: str | Path, config: TrainConfig, state: dict[str, torch.Tensor], metrics: dict[str, Any]) -> Path:
    """Save a learner's config, weights and metrics as the folder ``folder``.

    The three files are written into a staging folder beside it, which then takes its place by renames, so a
    crash leaves either the old learner or the new one whole (other files in a replaced folder are moved over).
    """
    given, folder = Path(folder), Path(os.path.abspath(folder))  # "runs/.." gets a name to stage beside (links stay)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, staging / WEIGHTS_FILE,
                  metadata={"format": FORMAT})
        config_text = dump_yaml(config.to_dict()).encode()
        (staging / CONFIG_FILE).write_bytes(config_text)
        record = {"format": FORMAT, "weights_sha256": _sha256(staging / WEIGHTS_FILE),
                  "config_sha256": hashlib.sha256(config_text).hexdigest(), **metrics}
        (staging / METRICS_FILE).write_text(json.dumps(record, indent=2, default=_json_default))
        for path in (staging, *staging.iterdir()):
            os.chmod(path, public_mode(directory=path.is_dir()))
        with open(staging / METRICS_FILE, "rb") as f:
            os.fsync(f.fileno())
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            os.rename(folder, old)
            os.rename(staging, folder)
            for entry in old.iterdir():  # the user's own files in a replaced learner folder stay
                if entry.name not in (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE):
                    os.rename(entry, folder / entry.name)
            shutil.rmtree(old)
        else:
            os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return given


def _ended_run_in(folder: Path) -> str | None:
    """The status of the learner saved in ``folder`` if its run ended by itself (completed, time budget,
    diverged), else None: no learner there, an unreadable record, or a run that was interrupted too."""
    try:
        status = json.loads((folder / METRICS_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) and status != "interrupted" else None


def save_result(folder: str | Path, result: Result) -> Result:
    """Save the learner of a finished :func:`nas_meta.training.train_iter` run; the returned record names the folder.

    An interrupted run never replaces a learner whose run ended by itself (a SLURM job preempted again after it
    finished once): it is saved beside it, in ``FOLDER.interrupted``.
    """
    folder = Path(folder)
    if result.metrics.status == "interrupted" and (kept := _ended_run_in(folder)) is not None:
        logger.warning("%s holds a learner whose run ended (%s): the interrupted run is saved beside it instead",
                       folder, kept)
        folder = folder.with_name(folder.name + ".interrupted") if folder.name else folder / "interrupted"
    path = save_learner(folder, result.config, result.learner.state_dict(), result.metrics.to_dict())
    return dataclasses.replace(result, path=path)


def finished_result(folder: str | Path, config: TrainConfig, device: torch.device) -> Result | None:
    """The run of exactly ``config`` that ``folder`` holds, if it ended by itself (not interrupted), as a
    :class:`~nas_meta.training.Result` on ``device``; else None (no learner, another config, a damaged folder).

    A comparison or a finalize started again after an interrupt (a preempted SLURM job) takes its finished runs
    from here instead of training them again.
    """
    folder = Path(folder)
    if not (folder / METRICS_FILE).is_file():
        return None
    try:
        saved, state, metrics = load_checkpoint(folder)
    except (CheckpointError, ConfigError):
        return None
    if saved != config or metrics.get("status") in (None, "interrupted"):
        return None
    known = {f.name for f in dataclasses.fields(RunMetrics)}
    try:
        run = RunMetrics(**{**{k: v for k, v in metrics.items() if k in known},
                            "dev_history": tuple(metrics.get("dev_history") or ())})
        learner = get_learner(config, run.label_space)
        learner.load_state_dict(state, strict=True)
    except (TypeError, RuntimeError):  # an older or edited record, weights of another network: train again
        return None
    logger.info("%s: reusing its finished run (%s, %d meta-iterations)", folder, run.status, run.iterations)
    return Result(config, learner.to(device), run, folder)


def train_to_folder(records: Iterable[Record], folder: str | Path) -> Result:
    """Run a :func:`nas_meta.training.train_iter` generator to its end and save its learner in ``folder``.

    An interrupt ends the run with the learner trained so far saved, then propagates from here.
    """
    result: Result | None = None
    for record in records:
        if isinstance(record, Result):
            result = save_result(folder, record)
    assert result is not None
    return result


def _json_default(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()  # numpy arrays and scalars
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(folder: str | Path) -> tuple[TrainConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a learner folder.

    Returns:
        ``(config, state_dict, metrics)``.

    Raises:
        CheckpointError: the folder or a file is missing, unreadable, or the weights do not match the record.
    """
    folder = Path(folder)
    if not folder.is_dir():
        replaced = sorted(folder.parent.glob(f".{folder.name}.old-*")) if folder.parent.is_dir() else []
        hint = (f" {replaced[-1]} holds the learner a save was replacing when it was interrupted: rename it to "
                f"{folder.name} to use it." if replaced else "")
        raise CheckpointError(f"{folder}: no such learner folder (expected {CONFIG_FILE}, {WEIGHTS_FILE}, "
                              f"{METRICS_FILE}).{hint}")
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE) if not (folder / n).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: missing {', '.join(missing)}; a learner folder holds {CONFIG_FILE}, "
                              f"{WEIGHTS_FILE} and {METRICS_FILE} (written by 'nas-meta train').")
    try:
        metrics = json.loads((folder / METRICS_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{folder / METRICS_FILE}: is not valid JSON ({err}).") from None
    if not isinstance(metrics, dict) or metrics.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"{folder / METRICS_FILE}: format is not one of {list(READABLE_FORMATS)}; this folder was "
                              "not written by nas-meta.")
    if metrics["format"] != FORMAT:
        logger.warning("%s: written by an older nas-meta (%s): its config.yaml is not covered by a checksum, so an "
                       "edit to it would go unnoticed", folder, metrics["format"])
    label_space = metrics.get("label_space")
    if label_space is not None and (isinstance(label_space, bool) or not isinstance(label_space, int)
                                    or not 1 <= label_space <= 100_000):
        raise CheckpointError(f"{folder / METRICS_FILE}: label_space={str(label_space)[:40]!r} is not allowed: "
                              "expected an integer in [1, 100000] (1: a regression family's one output).")
    if metrics["format"] == FORMAT and _sha256(folder / CONFIG_FILE) != metrics.get("config_sha256"):
        raise CheckpointError(f"{folder / CONFIG_FILE}: does not match the SHA-256 recorded in {METRICS_FILE}; the "
                              "config was edited after training, so the weights would run in another network. "
                              "Refusing to load (retrain the edited config instead).")
    try:
        config = train_config_from_dict(read_yaml(folder / CONFIG_FILE))
    except ConfigError as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {err}") from None
    digest = _sha256(folder / WEIGHTS_FILE)
    if digest != metrics.get("weights_sha256"):
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE}: SHA-256 {digest[:16]}… does not match the {str(metrics.get('weights_sha256'))[:16]}… "
            f"recorded in {METRICS_FILE}; the weights were changed or replaced after training. Refusing to load."
        )
    try:
        state = load_file(folder / WEIGHTS_FILE)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: is not a valid safetensors file ({err}).") from None
    for name, tensor in state.items():
        if tensor.dtype != torch.float32:
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: tensor {name!r} is {tensor.dtype}, but nas-meta learners "
                                  "hold float32 weights; refusing to load.")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: tensor {name!r} holds NaN or infinite values; refusing "
                                  "to load.")
    return config, state, metrics
