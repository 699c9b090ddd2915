"""Meta-steps replayed from a CUDA graph (nas_meta.cuda_graphs) against the same steps run eagerly.

The trajectory tests need CUDA: they run in the GPU check (``NAS_META_TEST_DEVICE=cuda``, benchmarks/gpu_check.sh)
and are skipped on a CPU, where the switch and the pass-through are tested instead.
"""

from __future__ import annotations

import pytest
import torch

from nas_meta.cuda_graphs import GraphedStep
from nas_meta.errors import ConfigError
from nas_meta.learners import MAML, get_learner
from tests.learners.helpers import tiny_config, tiny_episode


def trained(strategy: str, device: torch.device, episodes: list, *, graphs: bool, monkeypatch: pytest.MonkeyPatch,
            **learner: object) -> tuple[MAML, list[dict[str, float]]]:
    """A float64 learner from seed 0 after one meta-step on each of ``episodes``, and the steps' metrics."""
    monkeypatch.setenv("NAS_META_CUDA_GRAPHS", "1" if graphs else "0")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # the same kernels, run after run
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    model = get_learner(tiny_config(strategy, **learner), 10)
    assert isinstance(model, MAML)
    model.init_params(torch.Generator().manual_seed(0))
    model.to(device, torch.float64)
    metrics = [model.meta_step(e, i / len(episodes)) for i, e in enumerate(episodes)]
    return model, metrics


def float64(episode):  # type: ignore[no-untyped-def]
    return type(episode)(episode.support_x.double(), episode.support_y, episode.query_x.double(), episode.query_y,
                         episode.class_ids)


def test_on_a_cpu_the_step_runs_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    step = GraphedStep(lambda episode: calls.append(episode) or (episode.support_x.sum(),), warmup=1)
    episodes = [tiny_episode(seed=s) for s in range(3)]
    outputs = [step(e) for e in episodes]
    assert calls == episodes and not step.captured  # every call ran the function itself, on its own episode
    assert [float(o[0]) for o in outputs] == [float(e.support_x.sum()) for e in episodes]
    model, _ = trained("maml", torch.device("cpu"), [float64(tiny_episode())], graphs=True, monkeypatch=monkeypatch)
    assert not model.uses_cuda_graphs() and model._step == model.step_sums


@pytest.mark.parametrize("value", ["banana", "2", "-1"])
def test_a_bad_graphs_setting_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NAS_META_CUDA_GRAPHS", value)
    model = get_learner(tiny_config("maml"), 10)
    with pytest.raises(ConfigError) as info:
        model.meta_step(tiny_episode(), 0.0)
    assert str(info.value) == (f"NAS_META_CUDA_GRAPHS={value!r} is not allowed: expected 1/0 (or true/false, yes/no, "
                               "on/off).")


def needs_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        pytest.skip("CUDA graphs need a CUDA device (NAS_META_TEST_DEVICE=cuda)")


@pytest.mark.parametrize(("strategy", "learner"), [
    ("maml", {}), ("fomaml", {}), ("maml", {"train_steps": 3}), ("metasgd", {}), ("maml", {"head": "shared"}),
])
def test_replayed_steps_follow_the_eager_trajectory(strategy: str, learner: dict, device: torch.device,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    needs_cuda(device)
    episodes = [float64(tiny_episode(seed=s, device=device)) for s in range(8)]  # a new meta-batch every step
    eager, eager_metrics = trained(strategy, device, episodes, graphs=False, monkeypatch=monkeypatch, **learner)
    graphed, graphed_metrics = trained(strategy, device, episodes, graphs=True, monkeypatch=monkeypatch, **learner)
    assert not isinstance(eager._step, GraphedStep)
    assert isinstance(graphed._step, GraphedStep) and graphed._step.captured and not graphed._step.failed
    # Equal up to float64 rounding that Adam amplifies where a gradient is near zero (measured on an H200: 1e-8 of
    # the loss after 8 steps); a stale meta-batch or parameter would be off by 1e-3 or more (the steps differ so).
    assert len({round(m["loss"], 3) for m in eager_metrics}) > 4  # the steps' losses differ: stale inputs would show
    for a, b in zip(eager_metrics, graphed_metrics):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["accuracy"] == pytest.approx(b["accuracy"])
    for (name, p), q in zip(eager.named_parameters(), graphed.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
    start, _ = trained(strategy, device, [], graphs=False, monkeypatch=monkeypatch, **learner)
    body = [(p, q) for (n, p), q in zip(start.named_parameters(), graphed.parameters()) if ".body." in n]
    assert body and all(not torch.equal(p, q) for p, q in body)  # the steps moved every body weight

def test_a_meta_batch_of_another_size_runs_eagerly_and_the_graph_goes_on(device: torch.device,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    needs_cuda(device)
    episodes = [float64(tiny_episode(seed=s, device=device)) for s in range(6)]
    episodes.insert(5, float64(tiny_episode(tasks=2, seed=9, device=device)))
    eager, _ = trained("maml", device, episodes, graphs=False, monkeypatch=monkeypatch)
    graphed, _ = trained("maml", device, episodes, graphs=True, monkeypatch=monkeypatch)
    assert isinstance(graphed._step, GraphedStep) and graphed._step.captured
    for p, q in zip(eager.parameters(), graphed.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)


UNCAPTURABLE = """
import logging, sys, torch
from nas_meta.cuda_graphs import GraphedStep
from tests.learners.helpers import tiny_episode
logging.basicConfig()
device = torch.device(sys.argv[1])
weight = torch.zeros((), device=device)

def step(episode):
    weight.add_(float(episode.support_x.sum()))  # float(): a host synchronisation, which a capture refuses
    return (weight,)

graphed = GraphedStep(step, warmup=1)
episodes = [tiny_episode(seed=s, device=device) for s in range(4)]
for e in episodes:
    graphed(e)
expected = sum(float(e.support_x.sum()) for e in episodes)
after = float((torch.ones(3, device=device) * 2).sum())  # the device still works
print(graphed.failed, graphed.captured, abs(float(weight) - expected) <= 1e-5 * expected, after)
"""


def test_a_step_that_cannot_be_captured_runs_eagerly(device: torch.device) -> None:
    needs_cuda(device)  # in a process of its own: a failed capture must not take the suite's CUDA context with it
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-c", UNCAPTURABLE, str(device)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False", "True", "6.0"]
    assert "cannot be captured in a CUDA graph" in done.stderr
