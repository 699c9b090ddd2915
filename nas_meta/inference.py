"""Using a trained learner: load its folder, adapt it to a support set, classify images, score it on episodes."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .architectures import BatchStatNorm2d
from .checkpoint import load_checkpoint
from .config import MAX_SEED, PATH_OR_NONE, TrainConfig, check_arguments, clip, path_or_none, short, whole
from .data import preprocess
from .episodes import check_task_shape
from .errors import CheckpointError, ConfigError
from .learners import BaseLearner, get_learner
from .runtime import resolve_device
from .training import Workspace, evaluate, load_workspace

RAW_SIDE = 105  # the official drawings are 105x105 pixels
MIN_SIDE = 8


def _tensor_array(tensor: Tensor, name: str) -> np.ndarray:
    """A tensor as a numpy array on the CPU; floats numpy has no type for (bfloat16, float8) become float32."""
    tensor = tensor.detach().cpu()
    try:
        return tensor.numpy()
    except TypeError:  # "Got unsupported ScalarType BFloat16"
        if tensor.is_floating_point():
            return tensor.float().numpy()
        raise TypeError(f"{name} holds {str(tensor.dtype).removeprefix('torch.')} values: give real numbers.") from None


def _as_array(images: Any, name: str) -> np.ndarray:
    """``images`` as one numpy array: a tensor, an array, a PIL image, or a non-empty sequence of equal-shaped ones."""
    if isinstance(images, Tensor):
        return _tensor_array(images, name)
    if isinstance(images, np.ndarray):
        return images
    if isinstance(images, Image.Image):
        return _pil_array(images)
    array_like = hasattr(images, "__array__") or hasattr(images, "__array_interface__")
    if isinstance(images, (str, bytes, dict)) or not hasattr(images, "__len__") and not array_like:
        raise TypeError(f"{name} must be an array, a tensor, a PIL image or a sequence of them, not "
                        f"{type(images).__name__}.")
    if array_like and not isinstance(images, (list, tuple)):
        one: np.ndarray = np.asarray(images)
        return one
    if len(images) == 0:
        raise ValueError(f"{name} is empty: give at least one image.")
    arrays = [_tensor_array(i, name) if isinstance(i, Tensor) else _pil_array(i) if isinstance(i, Image.Image)
              else np.asarray(i) for i in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"{name} have different shapes {sorted(shapes)[:3]}: give images of one size.")
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1:
        raise TypeError(f"{name} mix dtypes {sorted(map(str, dtypes))}: give one kind of image.")
    return np.stack(arrays)


def _label_kind(value: object) -> str:
    if isinstance(value, (str, np.str_)):
        return "text"
    return "number" if isinstance(value, (int, float, np.number)) else "other"


def _pil_array(image: Image.Image) -> np.ndarray:
    """A PIL image as a raw drawing: bilevel images as bool, anything else as 8-bit gray."""
    array: np.ndarray = np.asarray(image if image.mode in ("1", "L") else image.convert("L"))
    return array


class AdaptedClassifier:
    """A learner adapted to one support set; classifies query images of the same task.

    Batch norm normalises query images with the statistics of the support set, kept at adaptation, so an
    image gets the same answer alone or in a batch. ``transductive=True`` (the MAML paper's test protocol)
    normalises with the statistics of the query batch instead: give a task's query images together then.
    """

    def __init__(self, owner: TrainedLearner, network: nn.Module, classes: np.ndarray) -> None:
        self._owner = owner
        self._network = network
        self.classes = classes

    @property
    def image_size(self) -> int:
        """The side ``S`` of the ``(n, 1, S, S)`` images :meth:`module` takes."""
        return self._owner.image_size

    def module(self) -> nn.Module:
        """The adapted network as a plain ``nn.Module`` in eval mode (a copy): ``(n, 1, S, S)`` float images with
        ink in [0, 1] (see :meth:`TrainedLearner.prepare`) to ``(n, ways)`` logits, columns in the order of
        :attr:`classes`. It runs without nas-meta, e.g. after ``torch.jit.script`` or ``torch.onnx.export``."""
        return copy.deepcopy(self._network)

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities, shape ``(n, ways)``, columns in the order of :attr:`classes`.

        Raises:
            TypeError, ValueError: ``images`` break the input contract of :meth:`TrainedLearner.prepare`.
        """
        x = self._owner.prepare(images, name="images")
        with torch.no_grad():
            logits: Tensor = self._network(x)
        probabilities: np.ndarray = logits.softmax(dim=-1).cpu().numpy()
        return probabilities

    def predict(self, images: Any) -> np.ndarray:
        """Predicted labels (values from the support labels)."""
        labels: np.ndarray = self.classes[self.predict_proba(images).argmax(axis=1)]
        return labels


class TrainedLearner:
    """A trained learner loaded from a folder by :func:`load_learner`."""

    def __init__(self, config: TrainConfig, learner: BaseLearner, metrics: dict[str, Any], device: torch.device) -> None:
        self.config = config
        self.learner = learner
        self.metrics = metrics
        self.device = device

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    def prepare(self, images: Any, *, name: str = "images") -> Tensor:
        """Images as the network wants them: ``(n, 1, S, S)`` float ink in [0, 1] on the device.

        The input contract, checked on every call:

        * raw drawings, as decoded from Omniglot's PNG files (``numpy.asarray(PIL.Image.open(f))``): square 2-D
          arrays of ``bool`` (True = background) or integers in [0, 255] (high = background, 0/1 included), at least
          8 pixels a side (105 in the official data), resized to ``S``;
        * preprocessed images: floating point, ``S`` x ``S`` (``S`` = the learner's ``data.image_size``), ink = 1,
          values in [0, 1], finite;

        one image ``(H, W)``, a batch ``(n, H, W)`` or ``(n, 1, H, W)``, as numpy arrays, torch tensors, PIL images
        or a sequence of them.

        Raises:
            TypeError: not an image type, or a dtype that is neither bool, integer nor floating point.
            ValueError: empty, wrong shape (color images included), values out of range or not finite.
        """
        arrays = _as_array(images, name)
        given = tuple(arrays.shape)
        if arrays.ndim == 3 and arrays.shape[-1] in (3, 4) and arrays.shape[0] == arrays.shape[1] >= MIN_SIDE:
            raise ValueError(f"{name} of shape {given} look like one color image (H, W, {arrays.shape[-1]}); give "
                             "grayscale drawings (H, W).")
        if arrays.dtype == object or not (arrays.dtype == bool or np.issubdtype(arrays.dtype, np.integer)
                                          or np.issubdtype(arrays.dtype, np.floating)):
            raise TypeError(f"{name} have dtype {arrays.dtype}; give bool or uint8 drawings, or float images in [0, 1].")
        if arrays.ndim == 2:
            arrays = arrays[None]
        elif arrays.ndim == 4 and arrays.shape[1] == 1:
            arrays = arrays[:, 0]
        if arrays.size == 0:
            raise ValueError(f"{name} is empty (shape {given}): give at least one image.")
        if arrays.ndim != 3:
            hint = " (color images? give grayscale drawings)" if arrays.ndim == 4 and arrays.shape[-1] in (3, 4) else ""
            raise ValueError(f"{name} must be one image (H, W) or a batch (n, H, W) or (n, 1, H, W), but got shape "
                             f"{given}{hint}.")
        _, height, width = arrays.shape
        size = self.image_size
        if np.issubdtype(arrays.dtype, np.floating):
            if (height, width) != (size, size):
                raise ValueError(f"{name} are float images of {height}x{width}; preprocessed images must be "
                                 f"{size}x{size} (this learner's data.image_size), and raw drawings bool or uint8.")
            if not np.isfinite(arrays).all():
                raise ValueError(f"{name} hold NaN or infinite values.")
            if arrays.min() < 0 or arrays.max() > 1:
                raise ValueError(f"{name} hold values in [{arrays.min():.3g}, {arrays.max():.3g}]; preprocessed images "
                                 "hold ink in [0, 1].")
            x = arrays.astype(np.float32)
        else:
            if height != width or height < MIN_SIDE:
                raise ValueError(f"{name} are {height}x{width}; raw drawings are square, at least {MIN_SIDE} pixels a "
                                 f"side ({RAW_SIDE}x{RAW_SIDE} in Omniglot).")
            if arrays.dtype != bool and (arrays.min() < 0 or arrays.max() > 255):
                raise ValueError(f"{name} hold values in [{arrays.min()}, {arrays.max()}]; raw drawings are bool or "
                                 "integers in [0, 255].")
            x = np.stack([preprocess(a.astype(np.uint8) if a.dtype != bool else a, size) for a in arrays])
            x = x.astype(np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).to(self.device)

    def adapt(self, images: Any, labels: Any, *, steps: int | None = None,
              transductive: bool = False) -> AdaptedClassifier:
        """Adapt to a support set: one label per image, at least two classes (any number of classes for a
        learner whose head is fitted at adaptation — pretrain, random — the trained ways otherwise).

        Args:
            images: the support images (see :meth:`prepare` for the input contract).
            labels: one label per image (numbers or strings); predictions come in these values.
            steps: adaptation steps (default: the config's ``learner.test_steps``).
            transductive: normalise query images with their own batch statistics (MAML's test protocol)
                instead of the support set's.

        Raises:
            TypeError, ValueError: bad images, labels or steps; ConfigError: ways the learner cannot adapt to.
        """
        if not isinstance(transductive, bool):
            raise TypeError(f"transductive must be True or False, not {short(transductive)}.")
        if self.config.task.family_info.regression:
            raise ConfigError(f"this learner was trained on task.family: {self.config.task.family} (regression), not on "
                              "images: adapt it with adapt_points(x, y).")
        x = self.prepare(images, name="images")
        if isinstance(labels, (str, bytes, dict)) or not hasattr(labels, "__len__"):
            raise TypeError(f"labels must be a sequence with one label per image, not {type(labels).__name__}.")
        label_array = _tensor_array(labels, "labels") if isinstance(labels, Tensor) else np.asarray(labels)
        if label_array.ndim != 1:
            raise ValueError(f"labels must be one-dimensional (one per image), but got shape {label_array.shape}.")
        if len(label_array) != len(x):
            raise ValueError(f"got {len(x)} support images but {len(label_array)} labels; give one label per image.")
        items = label_array.tolist() if isinstance(labels, (np.ndarray, Tensor)) else list(labels)
        kinds = {_label_kind(v) for v in items}
        if "other" in kinds:
            raise TypeError("labels must be numbers or strings.")
        if len(kinds) > 1:
            raise TypeError("labels mix numbers and strings; give labels of one kind.")
        if label_array.dtype.kind == "f" and not np.isfinite(label_array).all():
            raise ValueError("labels hold NaN or infinite values.")
        try:
            classes, y = np.unique(label_array, return_inverse=True)
        except TypeError:
            raise TypeError("labels must be of one comparable kind (all numbers or all strings).") from None
        if len(classes) < 2:
            raise ValueError(f"the support set has {len(classes)} class; give at least two classes to tell apart.")
        y_t = torch.as_tensor(y, dtype=torch.long, device=self.device)
        ways = len(classes)
        params = self.learner.adapt(x[None], y_t[None], ways=ways, steps=_adaptation_steps(steps))
        network = adapted_network(self.learner.template(ways), {k: v[0].detach() for k, v in params.items()}, x,
                                  transductive=transductive)
        return AdaptedClassifier(self, network, classes)

    def adapt_points(self, x: Any, y: Any, *, steps: int | None = None) -> AdaptedRegressor:
        """Adapt a regression learner (``task.family: sinusoid``) to a support set of points ``(x, y)``.

        Args:
            x, y: the support points: equal-length one-dimensional sequences (lists, NumPy arrays, tensors) of
                finite real numbers, at least one point.
            steps: adaptation steps (default: the config's ``learner.test_steps``).

        Raises:
            TypeError, ValueError: bad points or steps; ConfigError: a learner trained on images.
        """
        if not self.config.task.family_info.regression:
            raise ConfigError("this learner classifies Omniglot images: adapt it with adapt(images, labels).")
        support_x, support_y = _points(x, "x", self.device), _points(y, "y", self.device)
        if len(support_x) != len(support_y):
            raise ValueError(f"got {len(support_x)} x values but {len(support_y)} y values; give one y per x.")
        params = self.learner.adapt(support_x[None], support_y[None], ways=1, steps=_adaptation_steps(steps))
        network = adapted_network(self.learner.template(1), {k: v[0].detach() for k, v in params.items()}, support_x,
                                  transductive=False)
        return AdaptedRegressor(network, self.device)


MAX_POINTS_PER_CALL = 10_000_000


def _adaptation_steps(steps: Any) -> int | None:
    """``steps`` of :meth:`TrainedLearner.adapt` and :meth:`TrainedLearner.adapt_points` as an int (None: the
    config's ``learner.test_steps``).

    Raises:
        ValueError: not an integer in [0, 10000].
    """
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))
                              or not 0 <= steps <= 10_000):
        raise ValueError(f"steps={steps!r} is not allowed: expected an integer in [0, 10000].")
    return None if steps is None else int(steps)


def _points(values: Any, name: str, device: torch.device) -> Tensor:
    """``values`` as a ``(n, 1)`` float32 tensor on ``device``: one-dimensional, finite, real, not empty."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a sequence of numbers, not {type(values).__name__}.")
    array = _tensor_array(values, name) if isinstance(values, Tensor) else np.asarray(values)
    if array.dtype.kind not in "iuf" or array.dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers, but holds {array.dtype} values.")
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per point), but got shape {array.shape}.")
    if not 1 <= len(array) <= MAX_POINTS_PER_CALL:
        raise ValueError(f"{name} has {len(array)} values; give 1 to {MAX_POINTS_PER_CALL:,}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values.")
    return torch.as_tensor(array, dtype=torch.float32, device=device).reshape(-1, 1)


class AdaptedRegressor:
    """A regression learner adapted to one support set: predicts ``y`` at new ``x`` of the same task."""

    def __init__(self, network: nn.Module, device: torch.device) -> None:
        self._network = network
        self._device = device

    def predict(self, x: Any) -> np.ndarray:
        """The predicted ``y`` at each ``x`` (a one-dimensional sequence of finite numbers), as float32."""
        with torch.no_grad():
            out: np.ndarray = self._network(_points(x, "x", self._device))[:, 0].cpu().numpy()
        return out

    def module(self) -> nn.Module:
        """The adapted network as a plain ``nn.Module`` in eval mode (a copy): ``(n, 1)`` float inputs to ``(n, 1)``
        outputs. It runs without nas-meta."""
        return copy.deepcopy(self._network)


def adapted_network(template: nn.Module, params: dict[str, Tensor], support_x: Tensor, *,
                    transductive: bool) -> nn.Module:
    """A plain copy of ``template`` holding ``params``, in eval mode. Each batch norm becomes ``nn.BatchNorm2d``:
    with the support set's statistics (``support_x`` through the adapted layers before it), or, ``transductive``,
    normalising every batch with its own statistics."""
    network = copy.deepcopy(template)
    network.load_state_dict(params, strict=True)
    norms = [(name, m) for name, m in network.named_modules() if isinstance(m, BatchStatNorm2d)]
    stats: dict[str, tuple[Tensor, Tensor]] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: stats.__setitem__(
        name, (args[0].mean(dim=(0, 2, 3)), args[0].var(dim=(0, 2, 3), unbiased=False)))) for name, m in norms]
    with torch.no_grad():
        network(support_x)
    for hook in hooks:
        hook.remove()
    for name, old in norms:
        new = nn.BatchNorm2d(old.weight.shape[0], eps=old.eps, track_running_stats=not transductive,
                             device=old.weight.device)
        with torch.no_grad():
            new.weight.copy_(old.weight)
            new.bias.copy_(old.bias)
            if new.running_mean is not None and new.running_var is not None:  # kept support statistics
                new.running_mean.copy_(stats[name][0])
                new.running_var.copy_(stats[name][1])
        parent, _, child = name.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, child, new)
    return network.eval()


def load_learner_folder(path: str | Path, device: str = "cpu") -> TrainedLearner:
    """Load a learner folder written by ``nas-meta train`` (weights verified, never unpickled).

    Raises:
        CheckpointError: the folder is missing files, or its weights are not the ones it recorded or do not fit
            the network of its ``config.yaml``.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a folder path (str or pathlib.Path), not {type(path).__name__}.")
    config, state, metrics = load_checkpoint(path)
    torch_device = resolve_device(device)
    learner = get_learner(config, int(metrics.get("label_space") or config.task.ways))
    try:
        learner.load_state_dict(state, strict=True)
    except RuntimeError as err:
        problems = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        first = clip(problems[0], 150) if problems else "shapes differ"
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise CheckpointError(f"{path}: the weights do not fit the network in config.yaml ({first}{more}).") from None
    learner.to(torch_device).eval()
    return TrainedLearner(config, learner, metrics, torch_device)


def evaluate_learner(
    path: str | Path,
    *,
    split: str = "test",
    episodes: int = 600,
    ways: int | None = None,
    shots: int | None = None,
    query: int | None = None,
    steps: int | None = None,
    data: str | Path | None = None,
    device: str = "auto",
    seed: int | None = None,
) -> dict[str, object]:
    """Score a saved learner on a fixed episode set of ``split`` (mean accuracy and loss, 95% CIs).

    Raises:
        ConfigError: a bad argument (named) or episode shape; CheckpointError: the folder; DataError: the data.
    """
    if split not in ("dev", "test"):
        raise ConfigError(f"--split {split!r} is not one of ['dev', 'test'].")
    check_arguments(
        (whole(episodes, 1, 10**6), "episodes", episodes, "an integer in [1, 10^6]"),
        *[(value is None or whole(value, low, high), name, value, f"an integer in [{low}, {high}], or None")
          for name, value, low, high in (("ways", ways, 2, 10_000), ("shots", shots, 1, 19), ("query", query, 1, 19),
                                         ("steps", steps, 0, 10_000), ("seed", seed, 0, MAX_SEED))],
        (path_or_none(data), "data", data, PATH_OR_NONE),
        (isinstance(device, str), "device", device, "'auto', 'cpu', 'cuda' or 'cuda:N' (a string)"),
    )
    trained = load_learner_folder(path, device)
    config = trained.config
    ways = ways or config.task.ways
    shots = shots or config.task.shots
    query = query or config.task.query
    ws = load_workspace(config, data, trained.device)
    episode_seed = config.evaluation.seed if seed is None else seed
    within = config.task.within_alphabet  # scored on the kind of episode it was trained for
    if isinstance(ws, Workspace):
        check_task_shape(len(ws.splits[split]), ways, shots, query, f"{config.data.protocol!r} protocol's {split} split")
        fixed = ws.sampler(split, ways, shots, query, within_alphabet=within).fixed(episodes, episode_seed)
    else:  # another family: its TaskConfig checks the shape
        task = dataclasses.replace(config.task, ways=ways, shots=shots, query=query)
        fixed = ws.task_sampler(split, task).fixed(episodes, episode_seed)
    trained.learner.template(ways)  # fails early, with a clear message, for a fixed-ways learner
    result = evaluate(trained.learner, fixed, steps=steps, batch=config.evaluation.batch)
    return {
        "learner": str(path), "strategy": config.learner.strategy, "family": config.task.family,
        "protocol": config.data.protocol if config.task.family_info.needs_data else None, "split": split,
        "ways": ways, "shots": shots, "query": query, "within_alphabet": within,
        "steps": steps if steps is not None else config.learner.test_steps,
        "episode_seed": episode_seed, **result.summary(),
    }


EXPORT_FORMATS = ("torchscript", "onnx")


def read_support_folder(folder: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """A support set on disk: ``FOLDER/<label>/<image>.png``, one subfolder per class (raw Omniglot PNGs or any
    grayscale drawings, all of one size). Returns the decoded images (8-bit gray, high = background) and labels.

    Raises:
        ConfigError: the folder is missing, a class folder holds no PNG, fewer than two classes, an image cannot be
            read, or the images differ in size (the message names the file).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"--support {str(root)!r} is not a folder; give FOLDER/<label>/<image>.png.")
    images: list[np.ndarray] = []
    labels: list[str] = []
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    empty = [c.name for c in classes if not any(p.suffix.lower() == ".png" for p in c.iterdir())]
    if empty:
        raise ConfigError(f"--support {str(root)!r}: the class folder(s) {empty[:5]} hold no PNG image; give each "
                          "class at least one.")
    size: tuple[int, int] | None = None
    for label in classes:
        for path in sorted(p for p in label.iterdir() if p.suffix.lower() == ".png"):
            try:
                with Image.open(path) as image:
                    if image.size[0] * image.size[1] > 4096 * 4096:
                        raise ValueError(f"it is {image.size[0]}x{image.size[1]} pixels")
                    gray = np.asarray(image.convert("L"))  # bilevel (Omniglot) and gray images alike: 0..255
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # SyntaxError: a broken PNG chunk
                raise ConfigError(f"--support: {path} cannot be read as an image ({clip(str(err), 100)}).") from None
            if gray.shape[0] != gray.shape[1] or (size is not None and gray.shape != size):
                expected = f"like the others, {size[1]}x{size[0]}" if size is not None else "square"
                raise ConfigError(f"--support: {path} is {gray.shape[1]}x{gray.shape[0]} pixels; the drawings must be "
                                  f"{expected} ({RAW_SIDE}x{RAW_SIDE} in Omniglot).")
            size = gray.shape
            images.append(gray)
            labels.append(label.name)
    if len({*labels}) < 2:
        raise ConfigError(f"--support {str(root)!r} holds {len({*labels})} class folder(s) with PNG images; give one "
                          "subfolder of images per class, at least two.")
    return images, labels


def check_model_target(out: Path, *inputs: Path) -> None:
    """``export-model --out`` must be a file path that is not an input (the learner folder, the support folder) nor
    inside one, whose folder can be created, and whose labels file can be written beside it.

    Raises:
        ConfigError: the message names the path and what is wrong.
    """
    if not str(out) or str(out) == "." or out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a folder or empty; give a file path such as model.pt.")
    resolved = out.resolve()
    for folder in inputs:
        if resolved == folder.resolve() or folder.resolve() in resolved.parents:
            raise ConfigError(f"--out {str(out)!r} lies inside {str(folder)!r}, an input of this command; write the "
                              "model elsewhere.")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"--out {str(out)!r}: {str(blocking)!r} is a file, not a folder.")
    labels = out.with_name(out.name + ".labels.json")
    if labels.is_dir():
        raise ConfigError(f"--out {str(out)!r}: {str(labels)!r}, where its labels go, is a folder.")


def export_model(classifier: AdaptedClassifier, path: str | Path, fmt: str = "torchscript") -> Path:
    """Write the adapted network (:meth:`AdaptedClassifier.module`) as TorchScript or ONNX, and its class labels
    beside it (``<path>.labels.json``, in the order of the network's outputs).

    Raises:
        ConfigError: an unknown format, or ONNX without its packages (``pip install 'nas-meta[onnx]'``).
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {list(EXPORT_FORMATS)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = classifier.module().cpu()
    size = classifier.image_size
    example = torch.zeros(1, 1, size, size)
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(module), str(path))
    else:
        try:
            import onnx  # noqa: F401  the exporter needs it
        except ImportError:
            raise ConfigError("ONNX export needs the onnx packages: pip install 'nas-meta[onnx]'.") from None
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}})
    labels = path.with_name(path.name + ".labels.json")
    labels.write_text(json.dumps({"labels": [str(c) for c in classifier.classes], "image_size": size,
                                  "input": "(n, 1, S, S) float32, ink = 1 in [0, 1]"}, indent=2))
    return path
