"""A saved learner in use: load it, adapt it to a support set (tensors or raw drawings), classify, refuse misuse."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

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
from tests.conftest import snapshot
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


# -- the image API contract under hostile input: exact messages, the learner folder and the learner untouched ------



@pytest.fixture(scope="module")
def learner_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved(tmp_path_factory.mktemp("hostile"), "maml")[0]  # batch norm: tiny_config's default


@pytest.fixture()
def trained_tiny(learner_folder: Path) -> Any:
    before = snapshot(learner_folder)
    trained = load_learner_folder(learner_folder)
    state = {k: v.clone() for k, v in trained.learner.state_dict().items()}
    yield trained
    after = trained.learner.state_dict()
    assert all(torch.equal(after[k], state[k]) for k in state)  # a refused call changes nothing
    assert snapshot(learner_folder) == before


SHAPE_RULE = "must be one image (H, W) or a batch (n, H, W) or (n, 1, H, W), but got shape"
RAW_RULE = "raw drawings are square, at least 8 pixels a side (105x105 in Omniglot)"
DTYPE_RULE = "give bool or uint8 drawings, or float images in [0, 1]."
TYPE_RULE = "must be an array, a tensor, a PIL image or a sequence of them, not"
COLOR = " (color images? give grayscale drawings)"


def _with(shape: tuple[int, ...], dtype: Any, value: float, corner: float | None = None) -> np.ndarray:
    array = np.full(shape, value, dtype=dtype)
    if corner is not None:
        array.reshape(-1)[0] = corner
    return array


BAD_IMAGES = [
    pytest.param(np.zeros(64, np.float32), ValueError, f"images {SHAPE_RULE} (64,).", id="1-d"),
    pytest.param(np.zeros((1, 1, 1, 8, 8), np.float32), ValueError, f"images {SHAPE_RULE} (1, 1, 1, 8, 8).", id="5-d"),
    pytest.param(np.zeros((2, 2, 8, 8), np.float32), ValueError, f"images {SHAPE_RULE} (2, 2, 8, 8).", id="2-channels"),
    pytest.param(np.zeros((2, 105, 105, 3), np.uint8), ValueError, f"images {SHAPE_RULE} (2, 105, 105, 3){COLOR}.",
                 id="color-batch"),
    pytest.param(np.zeros((105, 100), np.uint8), ValueError, f"images are 105x100; {RAW_RULE}.", id="non-square-raw"),
    pytest.param(np.ones((50, 60), bool), ValueError, f"images are 50x60; {RAW_RULE}.", id="non-square-bool"),
    pytest.param(np.zeros((7, 7), np.uint8), ValueError, f"images are 7x7; {RAW_RULE}.", id="tiny-raw"),
    pytest.param(np.ones((5, 5), bool), ValueError, f"images are 5x5; {RAW_RULE}.", id="tiny-bool"),
    pytest.param(np.zeros((8, 8), np.complex64), TypeError, f"images have dtype complex64; {DTYPE_RULE}", id="complex"),
    pytest.param(torch.zeros(3, 1, 8, 8, dtype=torch.complex64), TypeError, f"images have dtype complex64; {DTYPE_RULE}",
                 id="complex-tensor"),
    pytest.param(np.zeros((8, 8), object), TypeError, f"images have dtype object; {DTYPE_RULE}", id="object"),
    pytest.param(np.full((8, 8), "a"), TypeError, f"images have dtype <U1; {DTYPE_RULE}", id="str-array"),
    pytest.param("drawing.png", TypeError, f"images {TYPE_RULE} str.", id="file-name"),
    pytest.param(b"\x89PNG", TypeError, f"images {TYPE_RULE} bytes.", id="bytes"),
    pytest.param({"image": 1}, TypeError, f"images {TYPE_RULE} dict.", id="dict"),
    pytest.param(5, TypeError, f"images {TYPE_RULE} int.", id="int"),
    pytest.param(None, TypeError, f"images {TYPE_RULE} NoneType.", id="none"),
    pytest.param((np.zeros((8, 8)) for _ in range(2)), TypeError, f"images {TYPE_RULE} generator.", id="generator"),
    pytest.param(_with((105, 105), np.int16, 0, -1), ValueError,
                 "images hold values in [-1, 0]; raw drawings are bool or integers in [0, 255].", id="raw-negative"),
    pytest.param(_with((105, 105), np.int16, 0, 256), ValueError,
                 "images hold values in [0, 256]; raw drawings are bool or integers in [0, 255].", id="raw-above-255"),
    pytest.param(_with((105, 105), np.uint16, 1000), ValueError,
                 "images hold values in [1000, 1000]; raw drawings are bool or integers in [0, 255].", id="uint16"),
    pytest.param(_with((8, 8), np.float32, 0.5, 1.5), ValueError,
                 "images hold values in [0.5, 1.5]; preprocessed images hold ink in [0, 1].", id="float-above-1"),
    pytest.param(_with((8, 8), np.float32, 0.5, -0.25), ValueError,
                 "images hold values in [-0.25, 0.5]; preprocessed images hold ink in [0, 1].", id="float-negative"),
    pytest.param(_with((8, 8), np.float32, 0.5, np.nan), ValueError, "images hold NaN or infinite values.", id="nan"),
    pytest.param(_with((8, 8), np.float64, 0.5, np.inf), ValueError, "images hold NaN or infinite values.", id="inf"),
    pytest.param(_with((2, 1, 8, 8), np.float32, 0.5, -np.inf), ValueError, "images hold NaN or infinite values.",
                 id="minus-inf"),
    pytest.param(np.zeros((28, 28), np.float32), ValueError, "images are float images of 28x28; preprocessed images "
                 "must be 8x8 (this learner's data.image_size), and raw drawings bool or uint8.", id="float-wrong-size"),
    pytest.param(np.zeros((105, 105), np.float32), ValueError, "images are float images of 105x105; preprocessed "
                 "images must be 8x8 (this learner's data.image_size), and raw drawings bool or uint8.",
                 id="float-raw-size"),
    pytest.param([], ValueError, "images is empty: give at least one image.", id="empty-list"),
    pytest.param(np.zeros((0, 8, 8), np.float32), ValueError, "images is empty (shape (0, 8, 8)): give at least one "
                 "image.", id="empty-array"),
    pytest.param(torch.zeros(0, 1, 8, 8), ValueError, "images is empty (shape (0, 1, 8, 8)): give at least one "
                 "image.", id="empty-tensor"),
    pytest.param([np.zeros((8, 8), np.float32), np.zeros((9, 9), np.float32)], ValueError,
                 "images have different shapes [(8, 8), (9, 9)]: give images of one size.", id="mixed-shapes"),
    pytest.param([np.ones((105, 105), bool), np.ones((50, 50), bool)], ValueError,
                 "images have different shapes [(50, 50), (105, 105)]: give images of one size.", id="mixed-drawings"),
    pytest.param([np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float64)], TypeError,
                 "images mix dtypes ['float32', 'float64']: give one kind of image.", id="mixed-dtypes"),
]


@pytest.mark.parametrize(("images", "error", "message"), BAD_IMAGES)
def test_bad_images_are_refused_by_prepare_adapt_and_predict(trained_tiny: TrainedLearner, images: Any,
                                                             error: type[Exception], message: str) -> None:
    if not isinstance(images, (np.ndarray, torch.Tensor, list)):
        with pytest.raises(error) as info:
            trained_tiny.prepare(images)
        assert str(info.value) == message
        return
    clf = trained_tiny.adapt(support_set(), [0, 0, 1, 1, 2, 2], steps=0)
    for call in (trained_tiny.prepare, clf.predict, clf.predict_proba,
                 lambda x: trained_tiny.adapt(x, list(range(len(x))) if len(x) else [0])):
        with pytest.raises(error) as info:
            call(images)
        assert str(info.value) == message


@pytest.mark.parametrize("image", [np.zeros((105, 105, 3), np.uint8), np.zeros((105, 105, 4), np.uint8)],
                         ids=["rgb", "rgba"])
def test_a_color_drawing_gets_the_grayscale_hint(trained_tiny: TrainedLearner, image: np.ndarray) -> None:
    with pytest.raises(ValueError) as info:
        trained_tiny.prepare(image)
    channels = image.shape[-1]
    assert str(info.value) == (f"images of shape (105, 105, {channels}) look like one color image (H, W, {channels}); "
                               "give grayscale drawings (H, W).")


def test_a_color_drawing_is_named_by_its_shape(trained_tiny: TrainedLearner) -> None:
    with pytest.raises(ValueError, match=re.escape("(105, 105, 3)")):
        trained_tiny.prepare(np.zeros((105, 105, 3), np.uint8))


def test_a_tiny_square_drawing_gets_no_color_hint(trained_tiny: TrainedLearner) -> None:
    with pytest.raises(ValueError) as info:
        trained_tiny.prepare(np.ones((4, 4), bool))
    assert str(info.value) == f"images are 4x4; {RAW_RULE}."


def test_a_pil_image_is_accepted(trained_tiny: TrainedLearner) -> None:
    from PIL import Image

    image = Image.fromarray(drawing(slice(20, 80)))
    assert trained_tiny.prepare(image).shape == (1, 1, 8, 8)


LABELS = [
    pytest.param([0, 0, 1, 1, 2], ValueError, "got 6 support images but 5 labels; give one label per image.",
                 id="too-few"),
    pytest.param([0, 0, 1, 1, 2, 2, 2], ValueError, "got 6 support images but 7 labels; give one label per image.",
                 id="too-many"),
    pytest.param([], ValueError, "got 6 support images but 0 labels; give one label per image.", id="empty"),
    pytest.param(np.zeros((6, 1)), ValueError, "labels must be one-dimensional (one per image), but got shape (6, 1).",
                 id="2-d"),
    pytest.param(torch.zeros(2, 3), ValueError, "labels must be one-dimensional (one per image), but got shape (2, 3).",
                 id="2-d-tensor"),
    pytest.param(np.int64(3), TypeError, "labels must be a sequence with one label per image, not int64.",
                 id="numpy-scalar"),
    pytest.param([7] * 6, ValueError, "the support set has 1 class; give at least two classes to tell apart.",
                 id="single-class"),
    pytest.param(["a"] * 6, ValueError, "the support set has 1 class; give at least two classes to tell apart.",
                 id="single-class-str"),
    pytest.param([0.0, 0.0, 1.0, 1.0, np.nan, np.nan], ValueError, "labels hold NaN or infinite values.", id="nan"),
    pytest.param([0.0, 0.0, 1.0, 1.0, np.inf, np.inf], ValueError, "labels hold NaN or infinite values.", id="inf"),
    pytest.param(np.array([0, 0, "a", "a", 1, 1], dtype=object), TypeError,
                 "labels mix numbers and strings; give labels of one kind.", id="mixed-object-array"),
    pytest.param([None, None, 1, 1, 2, 2], TypeError, "labels must be numbers or strings.", id="none-items"),
    pytest.param("aabbcc", TypeError, "labels must be a sequence with one label per image, not str.", id="string"),
    pytest.param(b"aabbcc", TypeError, "labels must be a sequence with one label per image, not bytes.", id="bytes"),
    pytest.param({0: "a"}, TypeError, "labels must be a sequence with one label per image, not dict.", id="dict"),
    pytest.param(3, TypeError, "labels must be a sequence with one label per image, not int.", id="int"),
    pytest.param(None, TypeError, "labels must be a sequence with one label per image, not NoneType.", id="none"),
]


@pytest.mark.parametrize(("labels", "error", "message"), LABELS)
def test_bad_labels_are_refused(trained_tiny: TrainedLearner, labels: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        trained_tiny.adapt(support_set(), labels)
    assert str(info.value) == message


def test_labels_mixing_numbers_and_strings_are_refused(trained_tiny: TrainedLearner) -> None:
    with pytest.raises(TypeError, match=re.escape("labels mix numbers and strings; give labels of one kind.")):
        trained_tiny.adapt(support_set(), [0, 0, "a", "a", 1, 1], steps=0)


@pytest.mark.parametrize("steps", [-1, True, False, 1.5, 2.0, float("nan"), 10_001, 10**9, "3", [1]],
                         ids=["negative", "true", "false", "float", "whole-float", "nan", "above", "huge", "str",
                              "list"])
def test_bad_steps_are_refused(trained_tiny: TrainedLearner, steps: Any) -> None:
    with pytest.raises(ValueError) as info:
        trained_tiny.adapt(support_set(), [0, 0, 1, 1, 2, 2], steps=steps)
    assert str(info.value) == f"steps={steps!r} is not allowed: expected an integer in [0, 10000]."


def test_steps_at_the_bounds_and_numpy_integers_are_accepted(trained_tiny: TrainedLearner) -> None:
    for steps in (0, np.int64(1)):
        assert trained_tiny.adapt(support_set(), [0, 0, 1, 1, 2, 2], steps=steps).predict(support_set()).shape == (6,)


# -- the floor: an image gets the same answer alone or in a batch; transductive batch norm is the exception --------

def test_one_image_at_a_time_gives_the_batch_answer_with_batch_norm(trained_tiny: TrainedLearner) -> None:
    assert trained_tiny.config.architecture.norm == "batch"
    clf = trained_tiny.adapt(support_set(), ["x", "x", "y", "y", "z", "z"], steps=2)
    query = torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    batch = clf.predict_proba(query)
    alone = np.concatenate([clf.predict_proba(query[i]) for i in range(len(query))])
    assert alone.shape == batch.shape == (9, 3)
    assert np.allclose(alone, batch, atol=1e-6)
    assert list(clf.predict(query)) == [clf.predict(query[i])[0] for i in range(len(query))]
    raw = [drawing(slice(a, a + 30)) for a in (5, 30, 60)]  # raw drawings too, one by one or together
    assert np.allclose(clf.predict_proba(raw), np.concatenate([clf.predict_proba(r) for r in raw]), atol=1e-6)


def test_transductive_predictions_depend_on_the_batch(trained_tiny: TrainedLearner) -> None:
    labels = ["x", "x", "y", "y", "z", "z"]
    query = torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    default = trained_tiny.adapt(support_set(), labels, steps=1).predict_proba(query)
    transductive = trained_tiny.adapt(support_set(), labels, steps=1, transductive=True)
    batch = transductive.predict_proba(query)
    assert not np.allclose(batch, default, atol=1e-3)
    assert np.allclose(batch.sum(axis=1), 1, atol=1e-6)
    assert not np.allclose(np.concatenate([transductive.predict_proba(query[i:i + 3]) for i in (0, 3, 6)]), batch,
                           atol=1e-3)


# -- export-model: its output path and its support folder ----------------------------------------------------

def _png(path: Path, size: tuple[int, int] = (105, 105), mode: str = "1") -> None:
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new(mode, size, 1 if mode == "1" else 255).save(path)


@pytest.mark.parametrize(("out", "message"), [
    ("learner/weights.safetensors", "lies inside"), ("support/a/x.png", "lies inside"), ("", "is a folder or empty"),
    (".", "is a folder or empty"), ("afile/m.pt", "is a file, not a folder"), ("labels/m.pt", "where its labels go"),
])
def test_an_export_model_target_that_would_overwrite_an_input_or_cannot_be_written_is_refused(
        tmp_path: Path, out: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nas_meta.inference import check_model_target

    monkeypatch.chdir(tmp_path)
    (tmp_path / "learner").mkdir()
    (tmp_path / "learner" / "weights.safetensors").write_bytes(b"kept")
    _png(tmp_path / "support" / "a" / "x.png")
    (tmp_path / "afile").write_text("kept")
    (tmp_path / "labels" / "m.pt.labels.json").mkdir(parents=True)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_model_target(Path(out), Path("learner"), Path("support"))
    assert (tmp_path / "learner" / "weights.safetensors").read_bytes() == b"kept"


def test_a_support_folder_names_empty_classes_and_odd_sizes(tmp_path: Path) -> None:
    from nas_meta.inference import read_support_folder

    _png(tmp_path / "s" / "a" / "1.png")
    (tmp_path / "s" / "b").mkdir()
    with pytest.raises(ConfigError, match=re.escape("the class folder(s) ['b'] hold no PNG image")):
        read_support_folder(tmp_path / "s")
    _png(tmp_path / "s" / "b" / "1.png", (105, 60))
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 's' / 'b' / '1.png'} is 105x60 pixels; the drawings "
                                                    "must be like the others, 105x105")):
        read_support_folder(tmp_path / "s")
    _png(tmp_path / "s" / "b" / "1.png", (105, 105), mode="L")  # gray and bilevel PNGs mix: both read as 8-bit gray
    images, labels = read_support_folder(tmp_path / "s")
    assert [i.dtype for i in images] == [np.uint8, np.uint8] and labels == ["a", "b"]


def test_a_support_png_with_a_broken_chunk_is_named(tmp_path: Path) -> None:
    """PIL reports a broken chunk as a SyntaxError, which used to escape as a traceback."""
    from nas_meta.inference import read_support_folder
    from tests.test_data import png_broken_chunk

    _png(tmp_path / "s" / "a" / "1.png")
    (tmp_path / "s" / "b").mkdir()
    (tmp_path / "s" / "b" / "1.png").write_bytes(png_broken_chunk())
    with pytest.raises(ConfigError, match=re.escape(f"--support: {tmp_path / 's' / 'b' / '1.png'} cannot be read as "
                                                    "an image (broken PNG file")):
        read_support_folder(tmp_path / "s")


def test_bfloat16_images_and_points_are_taken_as_the_floats_they_are(trained_tiny: TrainedLearner) -> None:
    """numpy has no bfloat16: such tensors used to fail inside ``.numpy()`` with torch's own TypeError."""
    clf = trained_tiny.adapt(support_set().bfloat16(), torch.tensor([0, 0, 1, 1, 2, 2], dtype=torch.bfloat16),
                             steps=0)
    query = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)).bfloat16()
    assert torch.equal(torch.as_tensor(clf.predict_proba(query)), torch.as_tensor(clf.predict_proba(query.float())))
    with pytest.raises(TypeError, match=r"^images have dtype complex64"):
        clf.predict(torch.zeros(2, 1, 8, 8, dtype=torch.complex64))
