"""The interface every initialization strategy implements, and the shell they share.

A learner is a thin stateful shell (an ``nn.Module`` holding the meta-parameters and the outer
optimizer) around the pure functions of :mod:`nas_meta.functional`. Its interface is three methods:
:meth:`BaseLearner.init_params`, :meth:`BaseLearner.adapt` and :meth:`BaseLearner.meta_step` (abstract).
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from ..architectures import build_network, initialize
from ..config import TrainConfig
from ..episodes import Episode
from ..errors import ConfigError
from ..functional import InnerLoop, LearningRate, Params, batched_adapt, batched_query_loss, tasks_per_chunk
from ..runtime import cuda_graphs_enabled


class BaseLearner(nn.Module, abc.ABC):
    """Shared shell: the network, the inner loop's settings, adaptation and query scoring.

    Subclasses implement :meth:`meta_step`; the head adaptation starts from is ``learner.adaptation_head``.
    ``trains_label_space_head``: the network's own head spans every training label (pre-training's classifier),
    not the training ways.
    """

    trains_label_space_head = False
    trains = True
    chunk_tasks: int | None = None  # tasks per pass of a meta-step; None: chosen by tasks_per_chunk
    captures_meta_step = False  # True: meta_step may be replayed from a CUDA graph on a GPU (uses_cuda_graphs)
    uses_outer_optimizer = False  # True: meta_step steps outer_optimizer()

    def __init__(self, config: TrainConfig, label_space: int) -> None:
        super().__init__()
        self.config = config
        self.train_ways = config.task.training_task().ways
        out = label_space if self.trains_label_space_head else self.train_ways
        self.network = build_network(config.architecture, out, *config.network_input())
        self._templates: dict[int, nn.Module] = {}
        self.optimizer: torch.optim.Optimizer | None = None

    def init_params(self, generator: torch.Generator) -> None:
        initialize(self.network, self.config.learner.init, generator)

    def uses_cuda_graphs(self) -> bool:
        """Whether meta-steps are captured in a CUDA graph (:mod:`nas_meta.cuda_graphs`): learners that set
        ``captures_meta_step``, on a CUDA device, unless ``NAS_META_CUDA_GRAPHS=0``."""
        on_cuda = next(self.parameters()).device.type == "cuda"
        return cuda_graphs_enabled() and self.captures_meta_step and on_cuda

    def prepare_training(self) -> None:
        """One-time set-up before meta-training's clock starts: the outer optimizer (the first one a process creates
        imports part of torch, about 3 s here: not training, and more than a short seconds budget)."""
        if self.uses_outer_optimizer and self.trains:
            self.outer_optimizer()

    def outer_optimizer(self) -> torch.optim.Optimizer:
        """Adam over all meta-parameters, created on first use (after the module reached its device); its step
        count lives on the device where the meta-step is captured in a CUDA graph."""
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(self.parameters(), lr=self.config.learner.outer_lr,
                                              capturable=self.uses_cuda_graphs())
        return self.optimizer

    # -- adaptation -------------------------------------------------------------------------------
    def inner_lr(self) -> LearningRate:
        return self.config.learner.inner_lr

    @property
    def head_mode(self) -> str:
        """``fixed`` (a meta-learned head of the training ways), ``zero`` or ``shared`` (any ways)."""
        return self.config.learner.adaptation_head

    def template(self, ways: int) -> nn.Module:
        """The module used as a function for ``ways``-way adaptation."""
        if self.head_mode == "fixed":
            if ways != self.train_ways:
                raise ConfigError(
                    f"ways={ways}: this {self.config.learner.strategy} learner meta-learned a "
                    f"{self.train_ways}-way head, so it adapts to {self.train_ways}-way tasks only "
                    "(learner.head: zero or shared for maml and fomaml, and pretrain and random learners, adapt to "
                    "any number of ways)."
                )
            return self.network
        if ways not in self._templates:
            network = build_network(self.config.architecture, ways, *self.config.network_input())
            self._templates[ways] = network.to(next(self.network.parameters()).device)
        return self._templates[ways]

    def starting_params(self, ways: int) -> Params:
        """Parameters adaptation starts from (meta-parameters; a zero head where the head is not meta-learned)."""
        params: Params = dict(self.network.named_parameters())
        if self.head_mode == "fixed":
            return params
        body: Params = {k: v for k, v in params.items() if not k.startswith("head.")}
        body.update(self.starting_head(ways))
        return body

    def starting_head(self, ways: int) -> Params:
        """The ``head.weight``/``head.bias`` a ``ways``-way adaptation starts from where the head is not fixed: zeros."""
        head = self.template(ways).get_submodule("head")
        assert isinstance(head, nn.Linear)
        device = next(self.network.parameters()).device
        return {"head.weight": torch.zeros(ways, head.in_features, device=device),
                "head.bias": torch.zeros(ways, device=device)}

    def task_chunk(self, episode: Episode) -> int:
        """Tasks per pass of a meta-step (``chunk_tasks`` if set, else :func:`~nas_meta.functional.tasks_per_chunk`)."""
        if self.chunk_tasks is not None:
            return self.chunk_tasks
        examples = int(episode.support_x.shape[1] + episode.query_x.shape[1])
        pixels = int(episode.support_x.shape[-1] * episode.support_x.shape[-2])
        return tasks_per_chunk(episode.tasks, examples, self.config.architecture.channels, pixels,
                               episode.support_x.device)

    def inner_loop(self, steps: int, *, first_order: bool) -> InnerLoop:
        return InnerLoop(steps, self.inner_lr(), first_order)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, ways: int, steps: int | None = None) -> Params:
        steps = self.config.learner.test_steps if steps is None else steps
        model = self.template(ways)
        return batched_adapt(
            model, self.starting_params(ways), {}, support_x, support_y, adapt=self.inner_loop(steps, first_order=True)
        )

    def query_scores(self, episode: Episode, *, steps: int | None = None) -> tuple[Tensor, Tensor]:
        """Per-task query loss and accuracy after adapting on the support set (no meta-gradient kept)."""
        steps = self.config.learner.test_steps if steps is None else steps
        ways = int(episode.class_ids.shape[1])
        with torch.no_grad():
            return batched_query_loss(
                self.template(ways),
                self.starting_params(ways),
                {},
                episode.support_x,
                episode.support_y,
                episode.query_x,
                episode.query_y,
                adapt=self.inner_loop(steps, first_order=True),
            )

    @abc.abstractmethod
    def meta_step(self, episode: Episode, progress: float) -> dict[str, float]:
        """One meta-training update on a meta-batch; ``progress`` in [0, 1] is the share of budget used."""

    def launch_meta_step(self, episode: Episode, progress: float) -> dict[str, float | Tensor]:
        """:meth:`meta_step`, whose metrics may still be device tensors (not waited for): the training loop
        draws the next meta-batch on the host while the device works, then reads them."""
        return dict(self.meta_step(episode, progress))

    def parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())
