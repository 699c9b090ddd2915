"""YAML files become validated, frozen dataclasses here, at the boundary.

Every field is type-checked and unknown keys are rejected. Errors name the file, the field's dotted
path, the bad value and what is allowed, e.g.::

    studies/omni_5w1s.yaml: learner.strategy='mamll' is not one of ['fomaml', 'maml', ...]
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from .errors import ConfigError
from .resources import shipped_baselines

Strategy = Literal["maml", "fomaml", "reptile", "metasgd", "pretrain", "random"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Protocol = Literal["maml", "vinyals", "lake"]
TaskFamily = Literal["omniglot", "sinusoid"]
MAX_POINTS = 100_000  # support + query points of one sinusoid task


@dataclass(frozen=True)
class Family:
    """What the rest of nas-meta needs to know of a task family besides its episodes (those come from its
    ``TaskSource`` in :mod:`nas_meta.training`): one entry of :data:`FAMILIES` per ``task.family``.

    Attributes:
        name: the ``task.family`` value.
        regression: real-valued targets (scored by the query MSE; a trained learner adapts to points), else class
            labels (scored by accuracy; a trained learner adapts to images).
        needs_data: tasks are drawn from a data set on disk (a data folder, a ``data.protocol``), else generated.
        defaults: what its configs get where they leave a field of a section out (the dataclasses' defaults are
            Omniglot's, the MAML paper's network and rates).
        setting_format: its task setting in words, from ``ways`` and ``shots``.
        baseline_format: the file name of a shipped baseline, from ``name``, ``ways`` and ``shots``.
    """

    name: str
    regression: bool
    needs_data: bool
    defaults: dict[str, dict[str, Any]]
    setting_format: str
    baseline_format: str

    def setting(self, ways: int, shots: int) -> str:
        """A task setting in words: "5-way 1-shot", "sinusoid regression, 10-shot"."""
        return self.setting_format.format(ways=ways, shots=shots)

    def baseline_file(self, name: str, ways: int, shots: int) -> str:
        return self.baseline_format.format(name=name, ways=ways, shots=shots)


FAMILIES: dict[str, Family] = {
    "omniglot": Family("omniglot", regression=False, needs_data=True, defaults={},
                       setting_format="{ways}-way {shots}-shot", baseline_format="{name}-{ways}w{shots}s.yaml"),
    # the MAML paper's section 5.1 (2 x 40 ReLU MLP, inner lr 0.01, meta-batch 25), with Xavier's initialization
    # (Kaiming's, scaled for images, starts the MLP at a loss of about 100)
    "sinusoid": Family("sinusoid", regression=True, needs_data=False,
                       defaults={"task": {"ways": 1, "shots": 10, "query": 10},
                                 "architecture": {"kind": "mlp", "blocks": 2, "channels": 40, "norm": "none",
                                                  "activation": "relu"},
                                 "learner": {"inner_lr": 0.01, "meta_batch": 25, "test_steps": 10, "init": "xavier"}},
                       setting_format="sinusoid regression, {shots}-shot",
                       baseline_format="{name}-sinusoid-{shots}s.yaml"),
}
assert set(FAMILIES) == set(get_args(TaskFamily))
MAX_SEED = 2**32 - 1
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
STUDY_NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"


def check_study_name(name: str, field: str = "--study-name") -> str:
    """``name`` if it is a valid study name (it becomes part of file names: no '/', no '..').

    Raises:
        ConfigError: the name breaks :data:`STUDY_NAME_RULE`.
    """
    if not isinstance(name, str) or STUDY_NAME.fullmatch(name) is None:
        raise ConfigError(f"{field} {short(name)} is not allowed: expected {STUDY_NAME_RULE}.")
    return name
PROTOCOL_CLASSES = {  # classes per split of each protocol (data.py builds them; the tests check them on the real data)
    "maml": {"train": 1100, "dev": 100, "test": 423},
    "vinyals": {"train": 4112, "dev": 688, "test": 1692},
    "lake": {"train": 818, "dev": 146, "test": 659},
}
PROTOCOL_LARGEST_ALPHABET = {  # classes of each split's largest alphabet: the most ways within one alphabet
    "maml": {"train": 39, "dev": 6, "test": 16},
    "vinyals": {"train": 220, "dev": 180, "test": 188},
    "lake": {"train": 55, "dev": 40, "test": 47},
}


def check_task_fits_protocol(task: TaskConfig, protocol: str) -> None:
    """``task.ways`` fits every split of ``protocol`` (within one alphabet when the task asks for it).

    Raises:
        ConfigError: naming the field, the value and the split that cannot hold it.
    """
    for split, count in PROTOCOL_CLASSES[protocol].items():
        name, ways = task.split_ways(split)
        _check(ways <= count, name, ways, f"at most {count}, the classes of the {protocol!r} protocol's {split} split")
    if task.within_alphabet:
        for split, count in PROTOCOL_LARGEST_ALPHABET[protocol].items():
            name, ways = task.split_ways(split)
            _check(ways <= count, name, ways, f"at most {count} with task.within_alphabet: true, the classes of the "
                   f"largest alphabet of the {protocol!r} protocol's {split} split")


Downsample = Literal["stride", "maxpool"]
Norm = Literal["batch", "instance", "layer", "none"]
Activation = Literal["relu", "leaky_relu", "elu", "gelu", "silu", "tanh"]
Head = Literal["mean", "flatten"]
ArchKind = Literal["conv", "cells", "mlp"]
CELL_OPS = ("conv_3x3", "conv_5x5", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3",
            "skip", "none")
MAX_CELL_NODES = 4
CELL_FIELDS = ("normal_ops", "normal_inputs", "reduce_ops", "reduce_inputs")  # searched one element at a time
LearnerHead = Literal["fixed", "zero", "shared"]
ANY_WAY_HEADS = ("maml", "fomaml")  # the strategies whose head can be zero or shared (pretrain, random: always zero)
NEW_HEAD_STRATEGIES = ("pretrain", "random")  # the strategies that always fit a zero head at adaptation
InitScheme = Literal["kaiming", "xavier", "orthogonal"]
InnerOptimizer = Literal["sgd", "adam"]
InnerState = Literal["fresh", "carried"]


@dataclass(frozen=True)
class DataConfig:
    """Which class split (protocol) of Omniglot and at what image size.

    ``train_rotations: true`` turns each training class by a random multiple of 90 degrees in every training task
    (a turned character counts as another class: four times the training classes, and pre-training's head grows
    to match); ``false`` keeps training classes upright; unset (null): the protocol's rule (``maml`` turns them,
    ``vinyals`` and ``lake`` do not). Dev and test classes always follow the protocol.
    """

    protocol: Protocol = "maml"
    image_size: int = 28
    train_rotations: bool | None = None

    def __post_init__(self) -> None:
        _check(8 <= self.image_size <= 105, "data.image_size", self.image_size, "an integer in [8, 105]")
        _check(not (self.train_rotations and self.protocol == "vinyals"), "data.train_rotations",
               self.train_rotations, "false or unset (null) with the 'vinyals' protocol, whose four rotations are "
               "separate classes already")


@dataclass(frozen=True)
class TaskConfig:
    """The task family and its episode shape.

    ``family: omniglot`` (N-way K-shot classification): ``ways`` classes, ``shots`` support and ``query`` query
    drawings per class. ``within_alphabet`` draws each episode's classes from one alphabet (chosen uniformly among
    those of the split with at least ``ways`` classes), in every split: Lake et al.'s one-shot task, harder than
    classes drawn at large. Where classes turn at random, all the classes of such a training episode turn alike
    (the fixed dev and test sets keep one turn per class).

    ``family: sinusoid`` (K-shot regression, Finn et al. 2017, section 5.1): each task is ``y = A sin(x - b)`` with
    amplitude ``A`` in [0.1, 5.0] and phase ``b`` in [0, pi]; ``shots`` support and ``query`` query points, ``x``
    uniform in [-5, 5]; the loss is the mean squared error. ``ways`` is 1 (one output).

    ``train_ways`` and ``train_shots`` give meta-training episodes another shape than the dev and test episodes
    (unset: the same): a learner that adapts to any number of ways can meta-train on cheap 5-way tasks and be chosen
    and tested on 20-way ones.
    """

    ways: int = 5
    shots: int = 1
    query: int = 15
    within_alphabet: bool = False
    family: TaskFamily = "omniglot"
    train_ways: int | None = None
    train_shots: int | None = None

    def __post_init__(self) -> None:
        _check(self.shots >= 1, "task.shots", self.shots, "an integer >= 1")
        _check(self.query >= 1, "task.query", self.query, "an integer >= 1")
        _check(self.train_shots is None or self.train_shots >= 1, "task.train_shots", self.train_shots,
               "an integer >= 1, or unset (null): task.shots")
        if self.family == "sinusoid":
            _check(self.ways == 1, "task.ways", self.ways, "1 with task.family: sinusoid (one regression output)")
            _check(self.train_ways is None, "task.train_ways", self.train_ways,
                   "unset (null) with task.family: sinusoid (one regression output)")
            _check(not self.within_alphabet, "task.within_alphabet", self.within_alphabet,
                   "false with task.family: sinusoid (alphabets are Omniglot's)")
            points, allowed = MAX_POINTS, f"at most {MAX_POINTS} points per sinusoid task"
        else:
            _check(2 <= self.ways <= 10_000, "task.ways", self.ways, "an integer in [2, 10000]")
            _check(self.train_ways is None or 2 <= self.train_ways <= 10_000, "task.train_ways", self.train_ways,
                   "an integer in [2, 10000], or unset (null): task.ways")
            points, allowed = 20, "at most 20 (Omniglot has 20 drawings of each character)"
        for name, shots in (("task.shots", self.shots), ("task.train_shots", self.train_shots)):
            if shots is not None:  # each episode shape, dev/test and meta-training, must fit one task's points
                _check(shots + self.query <= points, f"{name} + task.query", shots + self.query, allowed)

    @property
    def family_info(self) -> Family:
        """The task family's entry in :data:`FAMILIES`."""
        return FAMILIES[self.family]

    def described(self, protocol: str) -> str:
        """The task setting in words, as every listing and report names it: "5-way 1-shot Omniglot (maml protocol)",
        "20-way 1-shot Omniglot (lake protocol, within one alphabet)", "sinusoid regression, 10-shot"."""
        family = self.family_info
        text = family.setting(self.ways, self.shots)
        if family.needs_data:
            where = ", within one alphabet" if self.within_alphabet else ""
            text += f" {family.name.capitalize()} ({protocol} protocol{where})"
        return text

    def split_ways(self, split: str) -> tuple[str, int]:
        """The field that sets the ways of ``split``'s episodes, and its value."""
        if split == "train" and self.train_ways is not None:
            return "task.train_ways", self.train_ways
        return "task.ways", self.ways

    def training_task(self) -> TaskConfig:
        """The shape of meta-training episodes: ``train_ways`` and ``train_shots`` where set."""
        if self.train_ways is None and self.train_shots is None:
            return self
        return dataclasses.replace(self, ways=self.train_ways or self.ways, shots=self.train_shots or self.shots,
                                   train_ways=None, train_shots=None)


@dataclass(frozen=True)
class ArchConfig:
    """The few-shot network. The defaults are the MAML paper's Omniglot network.

    ``kind: conv`` stacks ``blocks`` plain conv blocks (``kernel``, ``downsample``). ``kind: cells`` stacks
    ``blocks`` DARTS-style cells after a stride-2 stem (Liu et al., ICLR 2019; MetaNAS, Elsken et al., CVPR 2020),
    reduction cells (stride 2) at positions ``blocks // 3`` and ``2 * blocks // 3``, the others normal cells. A cell
    has ``cell_nodes`` nodes; node ``j`` sums two edges, edge ``2j + e`` applying ``{normal,reduce}_ops[2j + e]`` (one
    of :data:`CELL_OPS`) to ``{normal,reduce}_inputs[2j + e]``: 0 is the cell's input, ``k`` the ``k``-th node (so
    at most ``j``). The cell's output is the mean of its nodes; every tensor has ``channels`` channels.
    """

    blocks: int = 4
    channels: int = 64
    kernel: int = 3
    downsample: Downsample = "stride"
    norm: Norm = "batch"
    activation: Activation = "relu"
    head: Head = "mean"
    kind: ArchKind = "conv"
    cell_nodes: int = 3
    normal_ops: tuple[str, ...] = ()
    normal_inputs: tuple[int, ...] = ()
    reduce_ops: tuple[str, ...] = ()
    reduce_inputs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(1 <= self.blocks <= 8, "architecture.blocks", self.blocks, "an integer in [1, 8]")
        _check(1 <= self.channels <= 1024, "architecture.channels", self.channels, "an integer in [1, 1024]")
        _check(self.kernel in (1, 3, 5, 7), "architecture.kernel", self.kernel, "one of [1, 3, 5, 7]")
        _check(1 <= self.cell_nodes <= MAX_CELL_NODES, "architecture.cell_nodes", self.cell_nodes,
               f"an integer in [1, {MAX_CELL_NODES}]")
        _check(self.kind != "mlp" or self.norm == "none", "architecture.norm", self.norm,
               "'none' with kind: mlp (the norms are those of convolutional feature maps)")
        for cell in ("normal", "reduce"):
            ops, inputs = getattr(self, f"{cell}_ops"), getattr(self, f"{cell}_inputs")
            for i, op in enumerate(ops):
                check_cell_element(f"{cell}_ops", i, op)
            for i, source in enumerate(inputs):
                check_cell_element(f"{cell}_inputs", i, source)
            if self.kind == "cells":
                edges = 2 * self.cell_nodes
                for field, values in ((f"{cell}_ops", ops), (f"{cell}_inputs", inputs)):
                    _check(len(values) == edges, f"architecture.{field}", list(values),
                           f"{edges} entries with kind: cells (2 edges per node, cell_nodes={self.cell_nodes})")

    def cell_edges(self, cell: Literal["normal", "reduce"]) -> list[tuple[str, int]]:
        """``(operation, input)`` of each edge of the normal or reduction cell, edge ``2j + e`` feeding node ``j``."""
        return list(zip(getattr(self, f"{cell}_ops"), getattr(self, f"{cell}_inputs")))


def check_cell_element(field: str, index: int, value: object) -> None:
    """Check one element of a cell field (``normal_ops``, ``reduce_inputs``, ...): an operation of
    :data:`CELL_OPS`, or an input in ``[0, index // 2]`` (edge ``index`` feeds node ``index // 2``).

    Raises:
        ConfigError: naming the field and element, the value and what is allowed.
    """
    name = f"architecture.{field}[{index}]"
    _check(0 <= index < 2 * MAX_CELL_NODES, f"architecture.{field}", index,
           f"at most {2 * MAX_CELL_NODES} entries (2 per node, up to {MAX_CELL_NODES} nodes)")
    if field.endswith("_ops"):
        _check(isinstance(value, str) and value in CELL_OPS, name, value, f"one of {list(CELL_OPS)}")
    else:
        node = index // 2
        _check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= node, name, value,
               f"an integer in [0, {node}]: edge {index} feeds node {node}, whose inputs are the cell's input (0) "
               f"and the nodes before it (1..{node})")


@dataclass(frozen=True)
class LearnerConfig:
    """The initialization strategy and its learning rates.

    ``inner_lr``/``train_steps``/``test_steps`` drive adaptation (fine-tuning for ``pretrain`` and
    ``random``); ``outer_lr`` is the meta (or pre-training) Adam learning rate; ``meta_step`` is Reptile's
    initial outer step size, annealed linearly to 0; ``init`` is the weight initialization scheme.

    ``head`` (MAML and first-order MAML): ``fixed`` meta-learns a ``task.ways``-way head, so the learner adapts to
    that many ways only; ``zero`` starts every task from a zero head of the task's width and meta-learns the body
    alone; ``shared`` meta-learns one weight vector and bias copied to every class (Ye & Chao, ICLR 2022). Both adapt
    to any number of ways. (Pre-training and random init always fit a zero head.)

    ``inner_state`` (Reptile with ``inner_optimizer: adam``): ``fresh`` starts every task's inner Adam from zero
    moments; ``carried`` carries its second moments and step count from task to task and from meta-iteration to
    meta-iteration, and into adaptation at test time, as openai/supervised-reptile does (its Adam slots are never
    reset). The learner keeps the state and saves it with its weights.

    ``inner_batch`` (Reptile): each inner step of meta-training takes the next ``inner_batch`` examples of the task,
    shuffled once per task, as supervised-reptile's mini-batches do (``train_steps * inner_batch`` = the task's
    examples: each one once); unset, every step takes all of them. Adaptation at test time takes the whole support set.
    """

    strategy: Strategy = "maml"
    inner_lr: float = 0.4
    train_steps: int = 1
    test_steps: int = 3
    outer_lr: float = 1e-3
    meta_batch: int = 32
    inner_optimizer: InnerOptimizer = "sgd"
    meta_step: float = 1.0
    init: InitScheme = "kaiming"
    head: LearnerHead = "fixed"
    inner_state: InnerState = "fresh"
    inner_batch: int | None = None

    def __post_init__(self) -> None:
        _check(self.inner_lr > 0, "learner.inner_lr", self.inner_lr, "a number > 0")
        _check(self.inner_batch is None or self.strategy == "reptile", "learner.inner_batch", self.inner_batch,
               f"unset (null) for strategy {self.strategy!r} (inner mini-batches are for reptile)")
        _check(self.inner_batch is None or 1 <= self.inner_batch <= 100_000, "learner.inner_batch", self.inner_batch,
               "an integer in [1, 100000], or unset (null): all of a task's examples in every step")
        _check(self.inner_state == "fresh" or (self.strategy == "reptile" and self.inner_optimizer == "adam"),
               "learner.inner_state", self.inner_state, f"'fresh' for strategy {self.strategy!r} with inner_optimizer "
               f"{self.inner_optimizer!r} ('carried' is for reptile with inner_optimizer: adam)")
        _check(self.head == "fixed" or self.strategy in ANY_WAY_HEADS, "learner.head", self.head,
               f"'fixed' for strategy {self.strategy!r} ('zero' and 'shared' are for {list(ANY_WAY_HEADS)}; pretrain "
               "and random always fit a zero head)")
        _check(1 <= self.train_steps <= 1000, "learner.train_steps", self.train_steps, "an integer in [1, 1000]")
        _check(0 <= self.test_steps <= 10_000, "learner.test_steps", self.test_steps, "an integer in [0, 10000]")
        _check(self.outer_lr > 0, "learner.outer_lr", self.outer_lr, "a number > 0")
        _check(1 <= self.meta_batch <= 10_000, "learner.meta_batch", self.meta_batch, "an integer in [1, 10000]")
        _check(0 < self.meta_step <= 1, "learner.meta_step", self.meta_step, "a number in (0, 1]")

    @property
    def adaptation_head(self) -> LearnerHead:
        """The head adaptation starts from: ``fixed`` (meta-learned at the training ways), ``zero`` or ``shared``.
        Pre-training and random init always start from a zero head."""
        return "zero" if self.strategy in NEW_HEAD_STRATEGIES else self.head

    @property
    def adapts_to_any_ways(self) -> bool:
        """Whether the learner adapts to tasks of any number of ways (else to its training ways only)."""
        return self.adaptation_head != "fixed"


MAX_ITERATIONS = 10**9  # the largest iteration cap: a budget at it is, in effect, its seconds alone


@dataclass(frozen=True)
class BudgetConfig:
    """When meta-training stops: after ``iterations`` meta-iterations or ``seconds``, whichever is first.

    ``seconds`` counts meta-training only: the time spent scoring dev episodes comes on top.
    """

    iterations: int = 1000
    seconds: float | None = None

    def __post_init__(self) -> None:
        _check(0 <= self.iterations <= MAX_ITERATIONS, "budget.iterations", self.iterations, "an integer in [0, 10^9]")
        _check(self.seconds is None or 0 < self.seconds <= 10**9, "budget.seconds", self.seconds,
               "a number of seconds in (0, 10^9], or null")


@dataclass(frozen=True)
class EvalConfig:
    """Development scoring during training: ``dev_episodes`` fixed episodes every ``every`` iterations.

    ``every_seconds`` scores them every so many seconds of meta-training instead (dev scoring not counted),
    so that trials of different speeds are compared, and pruned, at equal compute.

    ``seed`` fixes the dev and test episode sets; it is kept apart from the training seed so that every
    learner is scored on the same episodes and scores are paired.
    """

    dev_episodes: int = 100
    every: int = 200
    every_seconds: int | None = None
    batch: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.dev_episodes <= 100_000, "evaluation.dev_episodes", self.dev_episodes,
               "an integer in [1, 100000]")
        _check(1 <= self.every <= 10**9, "evaluation.every", self.every, "an integer in [1, 10^9]")
        _check(0 <= self.seed <= MAX_SEED, "evaluation.seed", self.seed, f"an integer in [0, {MAX_SEED}]")
        _check(self.every_seconds is None or 1 <= self.every_seconds <= 10**9, "evaluation.every_seconds",
               self.every_seconds, "a whole number of seconds >= 1, or null")
        _check(1 <= self.batch <= 10_000, "evaluation.batch", self.batch, "an integer in [1, 10000]")


@dataclass(frozen=True, kw_only=True)
class RunSections:
    """The sections a training config and a study file share: data, episodes, network, strategy, budget, scoring."""

    name: str = "learner"
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    architecture: ArchConfig = field(default_factory=ArchConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(RunSections):
    """Everything needed to meta-train and evaluate one candidate learner φ."""

    seed: int = 0

    def __post_init__(self) -> None:
        _check(0 <= self.seed <= MAX_SEED, "seed", self.seed, f"an integer in [0, {MAX_SEED}]")
        if self.task.family_info.regression:
            _check(self.architecture.kind == "mlp", "architecture.kind", self.architecture.kind,
                   f"'mlp' with task.family: {self.task.family} (its inputs are numbers, not images)")
        if self.task.within_alphabet:  # (the plain ways limit is the workspace's: tests train on small fake splits)
            check_task_fits_protocol(self.task, self.data.protocol)
        if not self.task.family_info.needs_data:
            _check(self.data.train_rotations is None, "data.train_rotations", self.data.train_rotations,
                   f"unset (null) with task.family: {self.task.family} (its tasks are generated, not images)")
        if self.task.train_ways not in (None, self.task.ways):
            _check(self.learner.adapts_to_any_ways, "task.train_ways", self.task.train_ways,
                   f"unset or task.ways={self.task.ways} for strategy {self.learner.strategy!r} with learner.head "
                   f"{self.learner.head!r}, which adapts to its training ways only (learner.head: zero or shared for "
                   f"{list(ANY_WAY_HEADS)} adapts to any)")
        _check(0 < len(self.name) <= 200 and self.name.isprintable(), "name", self.name,
               "a name of 1 to 200 printable characters")

    def network_input(self) -> tuple[int, int]:
        """``(image_size, in_channels)`` of the network's input: Omniglot's grey images, or for the sinusoid family
        one real number (a 1 x 1 "image" of one channel)."""
        return (1, 1) if self.task.family_info.regression else (self.data.image_size, 1)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (lists, not tuples: YAML and JSON) that :func:`train_config_from_dict` turns back into an
        equal config."""
        plain: dict[str, Any] = _plain(dataclasses.asdict(self))
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={short(value)} is not allowed: expected {allowed}.")


T = TypeVar("T")


def with_family_defaults(data: dict[Any, Any]) -> dict[Any, Any]:
    """``data`` (a config's sections) with the fields it leaves out taken from its task family's defaults
    (:attr:`Family.defaults`), e.g. the sinusoid family's one output and 2 x 40 ReLU MLP."""
    task = data.get("task")
    name = task.get("family", "omniglot") if isinstance(task, dict) else "omniglot"
    family = FAMILIES.get(name) if isinstance(name, str) else None  # an unknown one: from_dict names it
    defaults = family.defaults if family else {}
    out = dict(data)
    for section, fields in defaults.items():
        given = data.get(section)
        if given is None or isinstance(given, dict):  # else a malformed section, which from_dict names
            out[section] = {**fields, **(given or {})}
    return out


def from_dict(cls: type[T], data: object, where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from plain YAML data, checking keys and types.

    Args:
        cls: a dataclass type.
        data: a mapping (or None for all defaults).
        where: the dotted path of ``data`` inside its file, for messages.

    Raises:
        ConfigError: on an unknown key, a wrong type, a value not allowed.
    """
    prefix = f"{where}." if where else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'the file'} must be a mapping of fields, but got {_show(data)}.")
    if isinstance(cls, type) and issubclass(cls, RunSections):
        data = with_family_defaults(data)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]} is not a known field; allowed fields: {names}.")
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING  # type: ignore[arg-type]
                and f.default_factory is dataclasses.MISSING and f.name not in data]
    if required:
        raise ConfigError(f"{prefix}{required[0]} is required but missing; fields: {names}.")
    kwargs = {name: _coerce(hints[name], data[name], prefix + name) for name in names if name in data}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if not where or message.startswith(where) else f"{prefix}{message}") from None


def finite(number: float) -> bool:
    """Whether ``number`` is a finite float, or an int that a float can hold (``10**400`` is neither)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "must be true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "must be an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and finite(v), "must be a finite number"),
    str: (lambda v: isinstance(v, str), "must be a string"),
}


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)  # type: ignore[arg-type]
    if origin is Literal:
        choices = list(get_args(tp))
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(f"{path}={short(value)} is not one of {sorted(choices, key=str)}.")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={short(value)} must be a list.")
        item = get_args(tp)[0]
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}={short(value)} must be a mapping.")
        return dict(value)
    if tp is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 as a string; YAML 1.2 and every user read it as a number
    if tp in _SCALARS:
        accepts, rule = _SCALARS[tp]
        if not accepts(value):
            raise ConfigError(f"{path}={short(value)} {rule}.")
        return float(value) if tp is float else value
    if tp is Any or tp is object:
        return value
    raise TypeError(f"unsupported field type {tp!r} at {path}")  # a bug in nas-meta, not in the file


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxset = 2, 4, 6, 6, 6
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40


def short(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters, so a message never echoes a huge value."""
    return _SHORT.repr(value)


def clip(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def whole(value: object, low: int, high: int) -> bool:
    """Whether ``value`` is an integer (not a bool) in [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_arguments(*checks: tuple[bool, str, object, str]) -> None:
    """The Python API's argument checks, as the CLI checks its options: ``(ok, name, value, allowed)`` each.

    Raises:
        ConfigError: the first check that fails, naming the argument, its value and what is allowed.
    """
    for ok, name, value, allowed in checks:
        if not ok:
            raise ConfigError(f"{name}={short(value)} is not allowed: expected {allowed}.")


PATH_OR_NONE = "a folder path (str or pathlib.Path), or None"


def path_or_none(value: object) -> bool:
    return value is None or isinstance(value, (str, Path))


def _show(value: object) -> str:
    return f"{type(value).__name__} {short(value)}"


MAX_YAML_BYTES = 1 << 20  # study files, search spaces and training configs are a few kB
MAX_YAML_NODES = 100_000  # nodes of the document with every alias expanded (a "billion laughs" file has 10^9)


_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python objects) that checks the composed document before building it."""


def _check_nodes(root: yaml.Node) -> None:
    """Refuse duplicate keys and documents whose aliases expand beyond :data:`MAX_YAML_NODES` nodes."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:  # an alias refers to a node already counted: add its expanded size again, no walk
            return sizes[id(node)]
        sizes[id(node)] = 1  # cycles (recursive aliases) count once
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise yaml.MarkedYAMLError(problem=f"the key {short(key.value)} appears twice (first on line "
                                                           f"{seen[key.value]})", problem_mark=key.start_mark)
                    seen[key.value] = key.start_mark.line + 1
                total += size(key) + size(value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int"
              and _LEADING_ZERO.fullmatch(node.value)):
            raise yaml.MarkedYAMLError(problem=f"the integer {short(node.value)} has a leading zero (YAML 1.1 reads it "
                                               "as octal); write it without", problem_mark=node.start_mark)
        if total > MAX_YAML_NODES:
            raise yaml.MarkedYAMLError(problem=f"it expands to more than {MAX_YAML_NODES} values (anchors and "
                                               "aliases?)", problem_mark=node.start_mark)
        sizes[id(node)] = total
        return total

    size(root)


def parse_yaml(text: str) -> Any:
    """Parse YAML text safely, in time and memory bounded by its length.

    Raises:
        yaml.YAMLError: malformed, several documents, a duplicate key, or aliases that expand too far.
        RecursionError: nested too deeply.
        ValueError: a value Python refuses (e.g. an integer of thousands of digits).
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file safely (:func:`parse_yaml`); any problem is a one-line ConfigError naming the file.

    Raises:
        ConfigError: missing, unreadable, too large, not UTF-8 text, or not valid YAML.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a YAML file.")
        if path.exists() and not path.is_file():
            raise ConfigError(f"{path}: is not a regular file (a FIFO or a device?); give a YAML file.")
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file.") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err}).") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: is larger than {MAX_YAML_BYTES // 1024} KiB; nas-meta's YAML files are a few kB.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {err.start}); is it a YAML file?") from None
    try:
        return parse_yaml(text)
    except yaml.constructor.ConstructorError as err:
        where = f" at line {err.problem_mark.line + 1}" if err.problem_mark is not None else ""
        tag = " (tags such as !!python/object are not allowed)" if "constructor" in str(err.problem) else ""
        raise ConfigError(f"{path}: is not plain YAML{where}: {clip(str(err.problem))}{tag}.") from None
    except yaml.MarkedYAMLError as err:
        where = f" at line {err.problem_mark.line + 1}" if err.problem_mark is not None else ""
        problem = str(err.problem or err.context or "malformed")
        if "another document" in problem:
            problem = "it holds several YAML documents (---); give one"
        raise ConfigError(f"{path}: is not valid YAML{where}: {clip(problem)}.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: is not valid YAML: {clip(str(err))}.") from None
    except RecursionError:
        raise ConfigError(f"{path}: is nested too deeply to be a nas-meta YAML file.") from None
    except ValueError as err:
        reason = "an integer of thousands of digits" if "digits" in str(err) else clip(str(err), 100)
        raise ConfigError(f"{path}: holds a value that cannot be read ({reason}).") from None


def load_config(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
    """Read ``path`` into the dataclass ``cls``, with ``KEY=VALUE`` overrides (``--set``) applied on top;
    errors are prefixed with the file name, or with the override at fault.

    Raises:
        ConfigError: the file is empty or invalid, a field or an override is invalid.
    """
    data = read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: is empty; give a mapping of fields (an empty mapping {{}} takes every default).")
    try:
        base = from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if not overrides:
        return base
    merged = dataclasses.asdict(base)  # type: ignore[call-overload]
    for setting in overrides:
        try:
            key, value = parse_setting(setting)
            _set_dotted(cls, merged, key, value)
        except ConfigError as err:
            raise ConfigError(f"{path}: --set {short(setting)}: {err}") from None
    try:
        return from_dict(cls, merged)
    except ConfigError as err:
        shown = " ".join(clip(o, 60) for o in overrides[:3]) + (" …" if len(overrides) > 3 else "")
        raise ConfigError(f"{path} with --set {shown}: {err}") from None


def parse_setting(setting: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as YAML (``60``, ``null``, ``[maml, reptile]``, ``true``).

    Raises:
        ConfigError: no ``=``, an empty key, or a value that is not valid YAML.
    """
    key, sep, text = setting.partition("=")
    if not sep or not key.strip():
        raise ConfigError("not KEY=VALUE (e.g. --set budget.seconds=60).")
    try:
        return key.strip(), parse_yaml(text)
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        raise ConfigError(f"the value is not valid YAML ({clip(str(err), 80)}).") from None


def _set_dotted(cls: type, data: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` (a field of ``cls``, e.g. ``learner.inner_lr``) in ``data``."""
    target, owner, parts = data, cls, key.split(".")
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(owner)]
        if part not in names:
            where = ".".join(parts[:depth]) or "the file"
            raise ConfigError(f"{short(part)} is not a field of {where}; fields: {names}.")
        hint = typing.get_type_hints(owner)[part]
        if depth == len(parts) - 1:
            target[part] = value
        elif dataclasses.is_dataclass(hint) and isinstance(target.get(part), dict):
            target, owner = target[part], hint  # type: ignore[assignment]
        else:
            raise ConfigError(f"{clip('.'.join(parts[:depth + 1]), 80)} has no fields.")


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training config (e.g. ``studies/baselines/maml-5w1s.yaml``), with ``--set`` overrides."""
    return load_config(TrainConfig, path, overrides)


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of :meth:`TrainConfig.to_dict`."""
    return from_dict(TrainConfig, data)


def dump_yaml(data: Any) -> str:
    """YAML text for plain data, keys in insertion order."""
    return yaml.safe_dump(data, sort_keys=False)


# -- search spaces and studies ------------------------------------------------------------------------

ParamType = Literal["float", "int", "categorical"]
SamplerName = Literal["tpe", "random", "cmaes", "gp", "nsga2"]
PrunerName = Literal["median", "hyperband", "wilcoxon", "none"]
Objective = Literal["dev_loss", "parameters", "latency"]
SEARCHABLE_SECTIONS = ("architecture", "learner")
# the shape of meta-training episodes may be searched; the dev and test episodes' (task.ways, shots, query) may not:
# they define the objective, which must mean the same for every trial
SEARCHABLE_TASK_FIELDS = ("task.train_ways", "task.train_shots")


def searchable_fields() -> list[str]:
    """The dotted fields a search space may search (a cell's lists aside: those are searched one element at a time)."""
    return [f"{s}.{f.name}" for s in SEARCHABLE_SECTIONS for f in dataclasses.fields(_SECTION_TYPES[s])
            if f.name not in CELL_FIELDS] + list(SEARCHABLE_TASK_FIELDS)


@dataclass(frozen=True)
class ParamSpec:
    """One searched dimension of φ: a TrainConfig field (``learner.inner_lr``) and its distribution.

    ``when`` makes it conditional: ``{learner.strategy: [maml, fomaml]}`` suggests it only when every
    named, earlier parameter took one of the listed values. ``label`` is the Optuna parameter name
    (default: ``name``); give one when the same field has several conditional ranges.
    """

    name: str
    type: ParamType
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    when: dict[str, Any] | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        field_name, index = split_indexed(self.name)
        allowed = searchable_fields()
        indexed = [f"architecture.{f}" for f in CELL_FIELDS]
        _check(field_name in allowed if index is None else field_name in indexed, "name", self.name,
               f"one of {allowed}, or one element of a cell: {[f'{n}.N' for n in indexed]} (N from 0)")
        if self.type == "categorical":
            _check(self.choices is not None and len(self.choices) > 0, "choices", self.choices, "a non-empty list")
            _check(self.low is None and self.high is None, "low/high", (self.low, self.high),
                   "unset for a categorical parameter (use choices)")
        else:
            _check(self.choices is None, "choices", self.choices, f"unset for a {self.type} parameter (use low/high)")
            _check(self.low is not None and self.high is not None, "low/high", (self.low, self.high),
                   f"both set for a {self.type} parameter")
            assert self.low is not None and self.high is not None
            _check(self.low < self.high, "low", self.low, f"less than high={self.high}")
            _check(not self.log or self.low > 0, "low", self.low, "> 0 with log: true (a log scale starts above 0)")
            _check(not (self.log and self.step is not None), "step", self.step, "unset with log: true")
            _check(self.step is None or 0 < self.step <= self.high - self.low, "step", self.step,
                   f"a number in (0, high - low = {self.high - self.low:g}], or unset")
            if self.type == "int":
                _check(float(self.low).is_integer() and float(self.high).is_integer(), "low/high",
                       (self.low, self.high), "integers for an int parameter")
                _check(self.step is None or float(self.step).is_integer(), "step", self.step,
                       "a whole number for an int parameter")

    @property
    def key(self) -> str:
        """The Optuna parameter name."""
        return self.label or self.name

    def values_to_check(self) -> list[Any]:
        """Values whose validity as ``name`` is checked when the space is loaded."""
        if self.type == "categorical":
            return list(self.choices or ())
        return [int(self.low) if self.type == "int" else self.low, int(self.high) if self.type == "int" else self.high]  # type: ignore[arg-type]


_SECTION_TYPES: dict[str, type] = {"architecture": ArchConfig, "learner": LearnerConfig}


def _active_context(earlier: Sequence[ParamSpec], p: ParamSpec) -> dict[str, Any]:
    """Field values under which ``p`` is active: each parameter its ``when`` names, at the first listed value that
    parameter can take, and the parameters those are conditioned on in turn (a name that is not an earlier
    parameter, or values it cannot take, are left to the checks of ``when`` that follow)."""
    by_key = {q.key: q for q in earlier}
    context: dict[str, Any] = {}
    pending = list((p.when or {}).items())
    while pending:
        key, values = pending.pop()
        q = by_key.get(key)
        if q is None or q.name in context:  # (every `when` holds a list: SearchSpace checks that first)
            continue
        possible = [v for v in values if (v in (q.choices or ()) if q.type == "categorical" else
                                          q.type == "int" and isinstance(v, int) and not isinstance(v, bool)
                                          and q.low is not None and q.high is not None and q.low <= v <= q.high)]
        if possible:
            context[q.name] = possible[0]
            pending += list((q.when or {}).items())
    return context


def _validation_base(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """The config a space's values are checked against: ``base``, except that a cell network (``architecture.kind:
    cells``, or ``architecture.cell_nodes``) gets as many edges as its nodes call for (in a trial, the edges come
    with them)."""
    if values.get("architecture.kind") != "cells" and "architecture.cell_nodes" not in values:
        return base
    nodes = values.get("architecture.cell_nodes")
    if not (isinstance(nodes, int) and 1 <= nodes <= MAX_CELL_NODES):
        nodes = base.architecture.cell_nodes
    ops, inputs = ("skip",) * 2 * nodes, (0,) * 2 * nodes
    return dataclasses.replace(base, architecture=dataclasses.replace(
        base.architecture, kind="cells", cell_nodes=nodes, normal_ops=ops, normal_inputs=inputs, reduce_ops=ops,
        reduce_inputs=inputs))


def split_indexed(name: str) -> tuple[str, int | None]:
    """``architecture.normal_ops.3`` -> ``("architecture.normal_ops", 3)``; a plain field name -> ``(name, None)``."""
    head, _, last = name.rpartition(".")
    if head.count(".") == 1 and last.isdigit() and last.isascii():
        return head, int(last)
    return name, None


def _exclusive(p: ParamSpec, q: ParamSpec) -> bool:
    """Whether ``p`` and ``q`` can never both be active: they condition on one parameter with disjoint values."""
    shared = set(p.when or {}) & set(q.when or {})
    return any(not set(map(str, (p.when or {})[k])) & set(map(str, (q.when or {})[k])) for k in shared)


@dataclass(frozen=True)
class SearchSpace:
    """The searched part of φ. ``fixed`` sets fields to one value for every candidate."""

    name: str
    parameters: tuple[ParamSpec, ...]
    description: str = ""
    fixed: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check(len(self.parameters) > 0, "parameters", list(self.parameters), "at least one parameter to search")
        bad_keys = [k for k in (self.fixed or {}) if not isinstance(k, str)]
        _check(not bad_keys, "fixed", bad_keys, "dotted field names such as learner.meta_batch")
        for key in self.fixed or {}:  # one workspace and one set of dev episodes serve every trial of a study
            _check(key.split(".")[0] not in ("data", "task") or key in SEARCHABLE_TASK_FIELDS, "fixed", key,
                   "a field outside data and task (but task.train_ways, task.train_shots): the study file's data and "
                   "task sections say what every trial trains on and is scored on; set it there")
        for i, p in enumerate(self.parameters):  # the shape of every condition first: the checks below rely on it
            for cond, values in (p.when or {}).items():
                _check(isinstance(values, list) and len(values) > 0, f"parameters[{i}].when.{cond}", values,
                       "a non-empty list of values")
        for i, p in enumerate(self.parameters):  # one name may hold several ranges, for exclusive conditions
            for q in self.parameters[:i]:
                if q.key == p.key and not _exclusive(p, q):
                    raise ConfigError(f"parameters[{i}] ({p.key}): declared twice with conditions that can hold at "
                                      "once; give both a `when` on the same parameter with no value in common "
                                      "(or a `label:` to tell them apart).")
        base = TrainConfig()
        for i, p in enumerate(self.parameters):
            field_name, index = split_indexed(p.name)
            for value in p.values_to_check():
                try:
                    if index is not None:  # one element of a cell: checked on its own (the others come with it)
                        check_cell_element(field_name.partition(".")[2], index, value)
                        continue
                    values = {**_active_context(self.parameters[:i], p), p.name: value}  # checked where it applies
                    apply_overrides(_validation_base(base, values), values)
                except ConfigError as err:
                    raise ConfigError(f"parameters[{i}] ({p.key}): {short(value)} is not a valid value: {err}") from None
        seen: dict[str, ParamSpec] = {}
        for i, p in enumerate(self.parameters):
            for cond, values in (p.when or {}).items():
                _check(cond in seen, f"parameters[{i}].when", cond,
                       f"a parameter declared before {p.key!r}: one of {sorted(seen)}")
                ref = seen[cond]
                if ref.type == "categorical":
                    bad = [v for v in values if v not in (ref.choices or ())]
                    _check(not bad, f"parameters[{i}].when.{cond}", bad, f"values among {list(ref.choices or ())}")
                elif ref.type == "int":
                    assert ref.low is not None and ref.high is not None
                    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not ref.low <= v <= ref.high]
                    _check(not bad, f"parameters[{i}].when.{cond}", bad,
                           f"integers in the parameter's range [{ref.low:g}, {ref.high:g}]")
                else:
                    _check(False, f"parameters[{i}].when", cond, "a categorical or int parameter (a float parameter "
                           "almost never equals a listed value)")
            seen[p.key] = p
        if self.fixed:
            try:
                apply_overrides(base, self.fixed)
            except ConfigError as err:
                raise ConfigError(f"fixed: {err}") from None


@dataclass(frozen=True)
class SamplerSpec:
    """Optuna sampler: ``tpe`` (default), ``random``, ``cmaes``, ``gp`` or ``nsga2`` (multi-objective)."""

    name: SamplerName = "tpe"
    seed: int | None = None
    n_startup_trials: int = 10

    def __post_init__(self) -> None:
        _check(0 <= self.n_startup_trials <= 10**6, "sampler.n_startup_trials", self.n_startup_trials,
               "an integer in [0, 10^6]")
        _check(self.seed is None or 0 <= self.seed <= MAX_SEED, "sampler.seed", self.seed,
               f"an integer in [0, {MAX_SEED}], or null")


@dataclass(frozen=True)
class PrunerSpec:
    """Optuna pruner: ``median`` (default), ``hyperband``, ``wilcoxon`` (per-dev-task losses) or ``none``."""

    name: PrunerName = "median"
    n_startup_trials: int = 3
    n_warmup_steps: int = 0
    reduction_factor: int = 3
    p_threshold: float = 0.1

    def __post_init__(self) -> None:
        _check(2 <= self.reduction_factor <= 100, "pruner.reduction_factor", self.reduction_factor,
               "an integer in [2, 100]")
        _check(0 <= self.n_startup_trials <= 10**6, "pruner.n_startup_trials", self.n_startup_trials,
               "an integer in [0, 10^6]")
        _check(0 <= self.n_warmup_steps <= 10**9, "pruner.n_warmup_steps", self.n_warmup_steps, "an integer in [0, 10^9]")
        _check(0 < self.p_threshold < 1, "pruner.p_threshold", self.p_threshold, "a number in (0, 1)")


@dataclass(frozen=True, kw_only=True)
class StudySpec(RunSections):
    """A search study: episodes, per-trial budget, search space, objectives, sampler, pruner, storage, trials.

    ``architecture`` and ``learner`` give the values of every field the search space does not set.
    ``baselines`` names training configs enqueued as the first trials (``studies/baselines/<name>-<W>w<S>s.yaml``
    or a path), so the study holds its own baselines, scored like every candidate; left out, MAML and Reptile
    wherever a paper-settings config exists for the study's ways and shots.
    """

    name: str = field()  # required: a plain annotation would inherit RunSections' default
    search_space: str
    objectives: tuple[Objective, ...] = ("dev_loss",)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    storage: str | None = None
    n_trials: int = 20
    timeout: float | None = None
    baselines: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check(bool(self.objectives) and self.objectives[0] == "dev_loss", "objectives", list(self.objectives),
               "a list starting with 'dev_loss' (optionally followed by 'parameters' or 'latency')")
        _check(len(self.objectives) <= 2 and len(set(self.objectives)) == len(self.objectives), "objectives",
               list(self.objectives), "one or two distinct objectives")
        multi = len(self.objectives) > 1
        _check(not multi or self.sampler.name in ("tpe", "random", "nsga2", "gp"), "sampler.name", self.sampler.name,
               "one of ['gp', 'nsga2', 'random', 'tpe'] for a multi-objective study (CMA-ES is single-objective)")
        _check(multi or self.sampler.name != "nsga2", "sampler.name", self.sampler.name,
               "one of ['cmaes', 'gp', 'random', 'tpe'] for a single-objective study (NSGA-II needs two objectives)")
        _check(not multi or self.pruner.name == "none", "pruner.name", self.pruner.name,
               "'none' for a multi-objective study (Optuna prunes single-objective studies only)")
        _check(not (self.pruner.name == "hyperband" and self.evaluation.every_seconds is not None
                    and self.budget.seconds is None), "budget.seconds", self.budget.seconds,
               "a number of seconds when evaluation.every_seconds paces a hyperband pruner (its resource is then "
               "seconds of meta-training)")
        _check(STUDY_NAME.fullmatch(self.name) is not None, "name", self.name, STUDY_NAME_RULE)
        _check(1 <= self.n_trials <= 10**6, "n_trials", self.n_trials, "an integer in [1, 10^6]")
        _check(self.timeout is None or 0 < self.timeout <= 10**9, "timeout", self.timeout,
               "a number of seconds in (0, 10^9], or null")
        _check(0 <= self.seed <= MAX_SEED, "seed", self.seed, f"an integer in [0, {MAX_SEED}]")
        check_task_fits_protocol(self.task, self.data.protocol)

    def base_config(self) -> TrainConfig:
        """The training config every candidate starts from, before the search space's values."""
        return TrainConfig(name=self.name, data=self.data, task=self.task, architecture=self.architecture,
                           learner=self.learner, budget=self.budget, evaluation=self.evaluation, seed=self.seed)


SHIPPED_BASELINES = shipped_baselines()


def baseline_path(name: str, ways: int, shots: int, folders: list[Path], *, field_name: str = "baselines",
                  family: str = "omniglot") -> Path:
    """``<folder>/<name>-<W>w<S>s.yaml`` (``<name>-sinusoid-<S>s.yaml`` for the sinusoid family) from the first of
    ``folders`` that has it.

    Raises:
        ConfigError: no folder has it (the message lists the files of the first folder).
    """
    stem = FAMILIES[family].baseline_file(name, ways, shots)
    for folder in folders:
        if (folder / stem).exists():
            return folder / stem
    known = sorted(p.name for p in folders[0].glob("*.yaml"))
    what = FAMILIES[family].setting(ways, shots)
    raise ConfigError(f"{field_name}: {name!r} has no config {folders[0] / stem} for {what}; "
                      f"files in {folders[0]}: {known}.")


def apply_overrides(config: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted fields (``learner.inner_lr``) set, validated like a file's values.

    Elements of a cell field (``architecture.normal_ops.0``, ``.1``, ...) rebuild that field from the given
    elements alone, which must run from 0 without a gap (a search space suggests the edges of ``cell_nodes`` nodes).
    """
    data = config.to_dict()
    elements: dict[str, dict[int, Any]] = {}
    for dotted, value in values.items():
        field_name, index = split_indexed(dotted)
        if index is not None:
            elements.setdefault(field_name, {})[index] = value
            continue
        section, _, name = dotted.partition(".")
        if section not in data or not isinstance(data[section], dict) or name not in data[section]:
            raise ConfigError(f"{dotted} is not a field of a training config.")
        data[section][name] = list(value) if isinstance(value, tuple) else value
    for field_name, given in elements.items():
        section, _, name = field_name.partition(".")
        if section != "architecture" or name not in CELL_FIELDS:
            raise ConfigError(f"{field_name}.{min(given)}: only the cell fields {list(CELL_FIELDS)} of architecture "
                              "take elements one at a time.")
        missing = [i for i in range(max(given) + 1) if i not in given]
        if missing:
            raise ConfigError(f"{field_name}.{missing[0]} is not set, but {field_name}.{max(given)} is: a cell's "
                              "elements are set from 0 up, without a gap.")
        for i, value in given.items():
            check_cell_element(name, i, value)
        data[section][name] = [given[i] for i in range(len(given))]
    return train_config_from_dict(data)


def load_search_space(path: str | Path) -> SearchSpace:
    """Read ``search_spaces/*.yaml``; errors name the file, field, value and what is allowed."""
    return load_config(SearchSpace, path)


def load_study_spec(path: str | Path, overrides: Sequence[str] = ()) -> StudySpec:
    """Read ``studies/*.yaml``, with ``--set`` overrides (the search space file it names is read and checked too)."""
    spec = load_config(StudySpec, path, overrides)
    load_search_space(resolve_relative(path, spec.search_space))
    return spec


def resolve_relative(anchor: str | Path, target: str) -> Path:
    """``target`` as written in the file ``anchor``: relative to that file's folder, else to the working dir."""
    candidate = Path(anchor).parent / target
    return candidate if candidate.exists() or not Path(target).exists() else Path(target)
