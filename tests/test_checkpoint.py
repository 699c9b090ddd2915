"""Learner folders: round trip, and refusal of missing, tampered or foreign files without running pickles."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from nas_meta import checkpoint
from nas_meta.api import load_learner, train
from nas_meta.checkpoint import check_learner_target, load_checkpoint, save_learner
from nas_meta.config import TrainConfig
from nas_meta.errors import CheckpointError, ConfigError
from nas_meta.learners import get_learner
from tests.conftest import snapshot
from tests.learners.helpers import tiny_config


def saved(tmp_path: Path, strategy: str = "metasgd") -> Path:
    config = tiny_config(strategy)
    learner = get_learner(config, 10)
    learner.init_params(torch.Generator().manual_seed(5))
    return save_learner(tmp_path / "learner", config, learner.state_dict(), {"label_space": 10, "status": "completed"})


def test_round_trip_restores_config_and_every_tensor(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "metrics.json", "weights.safetensors"]
    trained = load_learner(folder)
    reference = get_learner(tiny_config("metasgd"), 10)
    reference.init_params(torch.Generator().manual_seed(5))
    assert trained.config == tiny_config("metasgd")
    for (name, a), b in zip(trained.learner.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


def test_missing_files_are_named(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    (folder / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing weights.safetensors; a learner folder holds"):
        load_learner(folder)
    with pytest.raises(CheckpointError, match="no such learner folder"):
        load_learner(tmp_path / "absent")


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    data = bytearray((folder / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match .* recorded in metrics.json; the weights were changed"):
        load_learner(folder)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['NAS_META_EXPLOIT_FLAG']}",))


def test_a_pickle_in_place_of_the_weights_is_never_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "pwned"
    monkeypatch.setenv("NAS_META_EXPLOIT_FLAG", str(flag))
    folder = saved(tmp_path)
    payload = pickle.dumps(_Exploit())
    (folder / "weights.safetensors").write_bytes(payload)
    import hashlib

    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["weights_sha256"] = hashlib.sha256(payload).hexdigest()  # a forger who also rewrote the record
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(CheckpointError, match="is not a valid safetensors file"):
        load_checkpoint(folder)
    assert not flag.exists()


def test_a_folder_not_written_by_nas_meta_is_refused(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.99}))
    with pytest.raises(CheckpointError, match="this folder was not written by nas-meta"):
        load_learner(folder)


def test_an_edited_config_is_refused(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text().replace("relu", "tanh"))
    with pytest.raises(CheckpointError, match="config.yaml: does not match the SHA-256 recorded in metrics.json; the "
                                              "config was edited after training"):
        load_learner(folder)


def test_weights_of_another_network_are_refused(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    text = (folder / "config.yaml").read_text().replace("channels: 4", "channels: 8")
    (folder / "config.yaml").write_text(text)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["config_sha256"] = hashlib.sha256(text.encode()).hexdigest()  # a forger who also rewrote the record
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(CheckpointError, match="the weights do not fit the network in config.yaml"):
        load_learner(folder)


@pytest.mark.parametrize("dtype, message", [(torch.int64, "is torch.int64, but nas-meta learners hold float32"),
                                            (torch.float64, "is torch.float64, but nas-meta learners hold float32"),
                                            (None, "holds NaN or infinite values")])
def test_weights_of_the_wrong_dtype_or_not_finite_are_refused(tmp_path: Path, dtype: torch.dtype | None,
                                                              message: str) -> None:
    folder = saved(tmp_path)
    state = load_file(folder / "weights.safetensors")
    name = sorted(state)[0]
    state[name] = state[name].to(dtype) if dtype is not None else state[name].fill_(float("nan"))
    save_file(state, folder / "weights.safetensors", metadata={"format": "nas-meta-learner/2"})
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["weights_sha256"] = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(CheckpointError, match=f"tensor '{name}' {message}"):
        load_learner(folder)


# -- where `train --out` may save a learner: checked before any training, nothing on disk changed -----------------



OTHER = "; give a new or empty folder, or a learner folder to replace."


def _file(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("my notes")
    return tmp / "notes.txt"


def _link_to_file(tmp: Path) -> Path:
    os.symlink(_file(tmp), tmp / "link")
    return tmp / "link"


def _folder_with(*names: str) -> Any:
    def make(tmp: Path) -> Path:
        folder = tmp / "out"
        folder.mkdir()
        for name in names:
            (folder / name).write_text(f"kept {name}")
        return folder
    return make


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(_file, "--out {out!r} is a file; give a folder to save the learner in.", id="a-file"),
        pytest.param(_link_to_file, "--out {out!r} is a file; give a folder to save the learner in.",
                     id="a-link-to-a-file"),
        pytest.param(_folder_with("notes.txt"), "--out {out!r} holds other files (notes.txt)" + OTHER,
                     id="a-folder-with-a-file"),
        pytest.param(_folder_with(*[f"run{i}.log" for i in range(7)]),
                     "--out {out!r} holds other files (run0.log, run1.log, run2.log, run3.log, run4.log, …)" + OTHER,
                     id="a-folder-with-many-files"),
        pytest.param(_folder_with("config.yaml"), "--out {out!r} holds other files (config.yaml)" + OTHER,
                     id="half-a-learner"),
        pytest.param(_folder_with("config.yaml", "weights.safetensors"),
                     "--out {out!r} holds other files (config.yaml, weights.safetensors)" + OTHER,
                     id="a-learner-without-metrics"),
        pytest.param(_folder_with("data", ".hidden"), "--out {out!r} holds other files (data)" + OTHER,
                     id="hidden-files-are-not-listed"),
    ],
)
def test_a_train_target_that_is_no_learner_folder_is_refused_untouched(tmp_path: Path, make: Any,
                                                                       message: str) -> None:
    out = make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as info:
        check_learner_target(out)
    assert str(info.value) == message.format(out=str(out))
    with pytest.raises(ConfigError) as info:  # through the API, before any data is looked for
        train(TrainConfig(), out, data=tmp_path / "no-data", device="cpu")
    assert str(info.value) == message.format(out=str(out))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_folder_with(), id="an-empty-folder"),
        pytest.param(_folder_with(".keep", ".DS_Store"), id="only-hidden-files"),
        pytest.param(lambda tmp: saved(tmp), id="a-learner-folder"),
        pytest.param(lambda tmp: tmp / "new" / "deeper", id="a-new-path"),
    ],
)
def test_an_empty_new_or_learner_folder_is_accepted_and_left_as_it_is(tmp_path: Path, make: Any) -> None:
    out = make(tmp_path)
    before = snapshot(tmp_path)
    assert check_learner_target(out) == out
    assert check_learner_target(str(out), option="--save-to") == out
    assert snapshot(tmp_path) == before  # checking creates nothing


def test_the_option_is_named_as_given(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        check_learner_target(_file(tmp_path), option="--learner-out")
    assert str(info.value) == f"--learner-out {str(tmp_path / 'notes.txt')!r} is a file; give a folder to save the learner in."


@pytest.mark.parametrize("below", ["notes.txt/learner", "dangling"])
def test_a_train_target_that_cannot_be_created_is_refused_before_training(tmp_path: Path, below: str) -> None:
    _file(tmp_path)
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    with pytest.raises(ConfigError):
        check_learner_target(tmp_path / below)


# -- regression: a learner folder is replaced through a staging folder -------------------------------------------

def _state_of(strategy: str = "metasgd", seed: int = 5) -> dict[str, torch.Tensor]:
    learner = get_learner(tiny_config(strategy), 10)
    learner.init_params(torch.Generator().manual_seed(seed))
    return learner.state_dict()


def test_a_crash_between_the_renames_leaves_the_old_learner_whole_and_named(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = saved(tmp_path)  # the old learner
    old_files = snapshot(folder)
    real_rename, calls = os.rename, []

    def crash_on_the_second(src: Any, dst: Any) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:
            raise OSError(5, "Input/output error (simulated crash)")
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", crash_on_the_second)
    with pytest.raises(OSError, match="simulated crash"):
        save_learner(folder, tiny_config("metasgd"), _state_of(seed=6), {"label_space": 10, "status": "completed"})
    monkeypatch.undo()
    (old,) = [p for p in tmp_path.iterdir()]  # the staging folder was removed; the old learner set aside, whole
    assert old.name.startswith(".learner.old-") and calls[0] == ("learner", old.name)
    assert calls[1][0].startswith(".learner.new-") and calls[1][1] == "learner"
    assert snapshot(old) == old_files
    config, state, _ = load_checkpoint(old)
    assert config == tiny_config("metasgd") and all(torch.equal(state[k], v) for k, v in _state_of().items())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder)
    assert str(info.value) == (
        f"{folder}: no such learner folder (expected config.yaml, weights.safetensors, metrics.json). {old} holds "
        "the learner a save was replacing when it was interrupted: rename it to learner to use it.")


def test_replacing_a_learner_keeps_the_users_files_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    (folder / "notes.txt").write_text("my notes")
    (folder / "plots").mkdir()
    (folder / "plots" / "loss.png").write_bytes(b"\x89PNG fake")
    new_state = _state_of(seed=6)
    assert save_learner(folder, tiny_config("metasgd"), new_state, {"label_space": 10}) == folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learner"]  # no staging or old folder left
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "metrics.json", "notes.txt", "plots",
                                                        "weights.safetensors"]
    assert (folder / "notes.txt").read_text() == "my notes"
    assert (folder / "plots" / "loss.png").read_bytes() == b"\x89PNG fake"
    _, state, _ = load_checkpoint(folder)
    assert all(torch.equal(state[k], v) for k, v in new_state.items())  # the new learner, not the old one


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_saved_learner_has_the_permissions_of_a_new_file_under_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        folder = saved(tmp_path)
        folder = saved(tmp_path)  # and when it replaces one
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == {"config.yaml": 0o666 & ~umask, "weights.safetensors": 0o666 & ~umask,
                     "metrics.json": 0o666 & ~umask}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask


# -- regression: label_space in metrics.json is checked; an older folder loads with a warning ----------------------

def _with_metrics(folder: Path, **changes: Any) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(changes)
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize(("value", "shown"), [("abc", "'abc'"), (1e11, "'100000000000.0'"), (-3, "'-3'"),
                                              (True, "'True'"), (0, "'0'"), (100_001, "'100001'"), ([10], "'[10]'"),
                                              ("x" * 100, repr("x" * 40))],
                         ids=["text", "1e11", "negative", "true", "zero", "too-many", "list", "long"])
def test_a_bad_label_space_is_refused_naming_metrics_json_and_the_value(tmp_path: Path, value: Any,
                                                                        shown: str) -> None:
    folder = saved(tmp_path)
    _with_metrics(folder, label_space=value)
    before = snapshot(tmp_path)
    for load in (load_checkpoint, load_learner):
        with pytest.raises(CheckpointError) as info:
            load(folder)
        assert str(info.value) == (f"{folder / 'metrics.json'}: label_space={shown} is not allowed: expected an "
                                   "integer in [1, 100000] (1: a regression family's one output).")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("strategy", ["metasgd", "pretrain"])
def test_a_null_label_space_counts_as_absent_and_falls_back_to_the_tasks_ways(tmp_path: Path, strategy: str) -> None:
    config = tiny_config(strategy)
    learner = get_learner(config, config.task.ways)  # a pre-trained head as wide as the task: null still fits it
    learner.init_params(torch.Generator().manual_seed(5))
    folder = save_learner(tmp_path / "learner", config, learner.state_dict(), {"label_space": None})
    trained = load_learner(folder)
    assert trained.metrics["label_space"] is None
    assert all(torch.equal(trained.learner.state_dict()[k], v) for k, v in learner.state_dict().items())
    _with_metrics(folder, label_space=10)  # what the weights were not trained for: refused as not fitting
    if strategy == "pretrain":
        with pytest.raises(CheckpointError, match="the weights do not fit the network in config.yaml"):
            load_learner(folder)


def test_an_older_format_folder_loads_with_a_warning_that_its_config_is_unchecked(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = saved(tmp_path)
    metrics = json.loads((folder / "metrics.json").read_text())
    del metrics["config_sha256"]  # nas-meta-learner/1 recorded the weights' checksum only
    metrics["format"] = "nas-meta-learner/1"
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with caplog.at_level(logging.WARNING, logger="nas_meta.checkpoint"):
        config, state, loaded = load_checkpoint(folder)
    assert config == tiny_config("metasgd") and loaded["format"] == "nas-meta-learner/1"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(
        logging.WARNING, f"{folder}: written by an older nas-meta (nas-meta-learner/1): its config.yaml is not "
                         "covered by a checksum, so an edit to it would go unnoticed")]
