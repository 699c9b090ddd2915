"""Learner folders: round trip, and refusal of missing, tampered or foreign files without running pickles."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from safetensors.torch import load_file, save_file

from nas_meta.api import load_learner
from nas_meta.checkpoint import load_checkpoint, save_learner
from nas_meta.errors import CheckpointError
from nas_meta.learners import get_learner
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
