"""A saved learner in use: load it, adapt it to a support set (tensors or raw drawings), classify, refuse misuse."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nas_meta
from nas_meta.checkpoint import save_learner
from nas_meta.config import load_train_config
from nas_meta.data import preprocess
from nas_meta.errors import ConfigError
from nas_meta.inference import TrainedLearner, evaluate_learner, load_learner_folder
from nas_meta.learners import get_learner
from tests.learners.helpers import tiny_config


def saved(tmp_path: Path, strategy: str = "maml") -> tuple[Path, dict[str, torch.Tensor]]:
    config = tiny_config(strategy)  # 3-way, 8x8 images, 2 blocks of 4 channels
    learner = get_learner(config, 10)
    learner.init_params(torch.Generator().manual_seed(5))
    state = {k: v.clone() for k, v in learner.state_dict().items()}
    return save_learner(tmp_path / strategy, config, state, {"label_space": 10, "status": "completed"}), state


def support_set(ways: int = 3, shots: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(ways * shots, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def drawing(stroke: slice | None) -> np.ndarray:
    """A raw Omniglot-like drawing: 105x105 bool, True = background, a False block as the stroke."""
    image = np.ones((105, 105), dtype=bool)
    if stroke is not None:
        image[stroke, stroke] = False
    return image


def test_load_learner_folder_round_trips_the_weights(tmp_path: Path) -> None:
    folder, state = saved(tmp_path, "metasgd")
    trained = load_learner_folder(folder)
    assert isinstance(trained, TrainedLearner)
    assert trained.config == tiny_config("metasgd") and trained.image_size == 8
    assert trained.metrics["label_space"] == 10 and trained.device == torch.device("cpu")
    loaded = trained.learner.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert not trained.learner.training  # loaded for inference


def test_adapt_then_predict_on_preprocessed_tensors(tmp_path: Path) -> None:
    trained = load_learner_folder(saved(tmp_path)[0])
    x = support_set()
    labels = ["b", "b", "c", "c", "a", "a"]
    clf = trained.adapt(x, labels, steps=20)
    assert list(clf.classes) == ["a", "b", "c"]
    query = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    proba = clf.predict_proba(query)
    assert proba.shape == (5, 3) and proba.dtype == np.float32
    assert (proba >= 0).all() and np.allclose(proba.sum(axis=1), 1, atol=1e-6)
    predicted = clf.predict(query)
    assert predicted.shape == (5,) and set(predicted) <= {"a", "b", "c"}
    assert list(predicted) == list(clf.classes[proba.argmax(axis=1)])
    # twenty adaptation steps fit the support set: it classifies its own images by their labels
    assert list(clf.predict(x)) == labels


def test_labels_keep_their_values_and_no_adaptation_leaves_the_initial_guess(tmp_path: Path) -> None:
    trained = load_learner_folder(saved(tmp_path)[0])
    x = support_set()
    labels = np.array([7, 7, 3, 3, 42, 42])
    adapted = trained.adapt(x, labels, steps=20)
    assert adapted.predict(x).tolist() == labels.tolist()
    unadapted = trained.adapt(x, labels, steps=0)
    assert not np.allclose(unadapted.predict_proba(x), adapted.predict_proba(x), atol=1e-3)


def test_prepare_accepts_raw_bool_drawings(tmp_path: Path) -> None:
    trained = load_learner_folder(saved(tmp_path)[0])
    blank, inked = drawing(None), drawing(slice(20, 80))
    x = trained.prepare([blank, inked])
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32
    assert float(x[0].abs().max()) == 0.0  # all background: no ink
    assert 0.9 < float(x[1].max()) <= 1.0 and float(x[1].min()) >= 0.0  # ink = 1
    assert torch.allclose(x[1, 0], torch.from_numpy(preprocess(inked, 8) / 255.0).float())
    assert trained.prepare(inked).shape == (1, 1, 8, 8)  # one drawing
    already = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    assert torch.equal(trained.prepare(already)[:, 0], torch.from_numpy(already))  # preprocessed: kept as is


def test_adapt_and_predict_on_raw_drawings(tmp_path: Path) -> None:
    trained = load_learner_folder(saved(tmp_path)[0])
    strokes = [slice(10, 40), slice(40, 70), slice(70, 100)]
    support = [drawing(s) for s in strokes for _ in range(2)]
    clf = trained.adapt(support, ["x", "x", "y", "y", "z", "z"])
    proba = clf.predict_proba([drawing(s) for s in strokes])
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-6)


def test_bad_images_and_labels_are_refused(tmp_path: Path) -> None:
    trained = load_learner_folder(saved(tmp_path)[0])
    with pytest.raises(ValueError, match=r"^images must be .*\(n, 1, H, W\), but got shape \(2, 3, 8, 8\)"):
        trained.prepare(np.zeros((2, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="got 6 support images but 5 labels; give one label per image"):
        trained.adapt(support_set(), [0, 0, 1, 1, 2])


def test_a_fixed_ways_learner_refuses_another_number_of_ways(tmp_path: Path) -> None:
    trained = load_learner_folder(saved(tmp_path, "maml")[0])
    with pytest.raises(ConfigError) as info:
        trained.adapt(support_set(ways=4), [0, 0, 1, 1, 2, 2, 3, 3])
    assert str(info.value).startswith("ways=4: this maml learner meta-learned a 3-way head, so it adapts to "
                                      "3-way tasks only")


def test_a_random_init_learner_fits_a_head_for_any_number_of_ways(tmp_path: Path) -> None:
    trained = load_learner_folder(saved(tmp_path, "random")[0])
    clf = trained.adapt(support_set(ways=4), [0, 0, 1, 1, 2, 2, 3, 3])
    assert clf.predict_proba(support_set(ways=4, seed=2)).shape == (8, 4)


def test_evaluate_learner_refuses_an_unknown_split_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        evaluate_learner(tmp_path / "absent", split="train")
    assert str(info.value) == "--split 'train' is not one of ['dev', 'test']."


TINY = """
name: tiny-maml
task: {ways: 5, shots: 1, query: 3}
architecture: {blocks: 4, channels: 32}
learner: {strategy: maml, inner_lr: 0.4, train_steps: 1, test_steps: 5, outer_lr: 0.003, meta_batch: 8}
budget: {iterations: 60}
evaluation: {dev_episodes: 20, every: 20}
seed: 3
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> Path:
    folder = tmp_path_factory.mktemp("inference")
    (folder / "tiny.yaml").write_text(TINY)
    result = nas_meta.train(load_train_config(folder / "tiny.yaml"), folder / "learner", data=omniglot, device="cpu")
    assert result.metrics.status == "completed" and result.metrics.iterations == 60
    assert result.path == folder / "learner"
    return folder / "learner"


@pytest.mark.slow
def test_load_learner_adapts_on_raw_png_arrays(trained: Path, omniglot: Path) -> None:
    learner = nas_meta.load_learner(trained)
    with zipfile.ZipFile(omniglot / "images_evaluation.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        by_char: dict[str, list[str]] = {}
        for n in names:
            by_char.setdefault(n.rsplit("/", 1)[0], []).append(n)
        chars = sorted(by_char)
        correct = total = 0
        rng = np.random.default_rng(0)
        for _ in range(6):
            picked = rng.choice(len(chars), 5, replace=False)
            support, labels, query, truth = [], [], [], []
            for c in picked:
                files = by_char[chars[c]]
                arrays = [np.asarray(Image.open(io.BytesIO(z.read(f)))) for f in files[:4]]
                assert arrays[0].dtype == bool and arrays[0].shape == (105, 105)
                support.append(arrays[0])
                labels.append(chars[c])
                query.extend(arrays[1:])
                truth.extend([chars[c]] * 3)
            clf = learner.adapt(support, labels)
            proba = clf.predict_proba(query)
            assert proba.shape == (15, 5) and np.allclose(proba.sum(1), 1, atol=1e-5)
            predicted = clf.predict(query)
            correct += int((predicted == np.asarray(truth)).sum())
            total += len(truth)
    assert correct / total > 0.4  # chance is 0.2
