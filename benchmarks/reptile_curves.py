"""Why is Reptile slow to learn here? Test-accuracy curves, at equal meta-iterations, of nas-meta's Reptile and of
per-task loops written the way openai/supervised-reptile trains (one task at a time, torch.optim.Adam).

Every variant starts from the same initial weights (``studies/baselines/reptile-5w1s.yaml``'s network and seed),
meets the same training tasks in the same order (nas-meta's sampler, seeded as ``nas-meta train`` seeds it: 5 tasks
per meta-iteration, 10 images per class), anneals the meta step from 1 to 0 over ``--iterations``, and is scored
the same way at each checkpoint: on the first ``--episodes`` of the 600 fixed test episodes ``nas-meta evaluate``
uses, by 50 steps of a fresh Adam (lr 1e-3, β1 = 0) on the support images, then the query images as one batch
(transductive batch norm, as supervised-reptile's published numbers and nas-meta's scoring do).

Variants (what differs from supervised-reptile is named):
  nas-meta            nas-meta's Reptile learner (batched; a fresh Adam per task; each step on all 50 images)
  nas-meta-carried    the same with ``learner.inner_state: carried`` (the inner Adam's state carried over)
  nas-meta-carried-mini  and ``learner.inner_batch: 10``: supervised-reptile's training, in nas-meta's learner
  loop-fresh-full     a per-task loop doing what nas-meta does (checks the batched learner against a plain loop)
  loop-fresh-mini     a fresh Adam per task, 5 steps on mini-batches of 10 (each image once)
  supervised-reptile  the inner Adam's state (second moments, step count) carried from task to task and from
                      meta-iteration to meta-iteration, mini-batches of 10: supervised-reptile's train loop

    python benchmarks/reptile_curves.py --variants supervised-reptile,nas-meta --iterations 2500 --every 500 \\
        [--episodes 200] [--data FOLDER] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from reptile_reference import BETAS, LR, loop_meta_step
from torch import nn

from nas_meta.config import load_train_config
from nas_meta.episodes import Episode
from nas_meta.training import build_learner, load_workspace

CONFIG = Path(__file__).resolve().parents[1] / "studies" / "baselines" / "reptile-5w1s.yaml"
VARIANTS = ("nas-meta", "nas-meta-carried", "nas-meta-carried-mini", "loop-fresh-full", "loop-fresh-mini",
            "supervised-reptile")
STEPS, MINI_BATCH, TEST_STEPS = 5, 10, 50


def test_accuracy(net: nn.Module, episodes: list[Episode]) -> tuple[float, float]:
    """Mean test accuracy and its 95% interval: a fresh Adam, ``TEST_STEPS`` steps on each support set."""
    start = [p.detach().clone() for p in net.parameters()]
    scores = []
    for batch in episodes:
        for t in range(batch.tasks):
            with torch.no_grad():
                for p, p0 in zip(net.parameters(), start):
                    p.copy_(p0)
            optimizer = torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS)
            for _ in range(TEST_STEPS):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(batch.support_x[t]), batch.support_y[t]).backward()
                optimizer.step()
            with torch.no_grad():
                scores.append(float((net(batch.query_x[t]).argmax(-1) == batch.query_y[t]).float().mean()))
    with torch.no_grad():
        for p, p0 in zip(net.parameters(), start):
            p.copy_(p0)
    values = np.array(scores)
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def run(variant: str, args: argparse.Namespace) -> dict[str, object]:
    carried = ["learner.inner_state=carried"] if variant.startswith("nas-meta-carried") else []
    carried += [f"learner.inner_batch={MINI_BATCH}"] if variant == "nas-meta-carried-mini" else []
    config = load_train_config(CONFIG, ["budget.seconds=null", f"budget.iterations={args.iterations}", *carried])
    torch.manual_seed(config.seed)
    workspace = load_workspace(config, args.data, torch.device("cpu"))
    sampler = workspace.task_sampler("train", config.task.training_task())
    test = next(iter(workspace.task_sampler("test", config.task).fixed(600, config.evaluation.seed).batches(args.episodes)))
    learner = build_learner(config, workspace.splits["train"].label_space, torch.device("cpu"), config.seed)
    net = learner.network  # the same initial weights for every variant
    tasks = torch.Generator().manual_seed(config.seed + 1)  # the training tasks nas-meta train draws
    shuffles = torch.Generator().manual_seed(config.seed + 2)
    adam = torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS) if variant == "supervised-reptile" else None
    mini_batch = None if variant.startswith("nas-meta") or variant == "loop-fresh-full" else MINI_BATCH
    curve: list[dict[str, float]] = []
    trained = 0.0
    for iteration in range(1, args.iterations + 1):
        episode = sampler.sample(tasks, config.learner.meta_batch)
        progress = (iteration - 1) / args.iterations
        begin = time.perf_counter()
        if variant.startswith("nas-meta"):
            learner.meta_step(episode, progress)
        else:
            x = torch.cat([episode.support_x, episode.query_x], dim=1)
            y = torch.cat([episode.support_y, episode.query_y], dim=1)
            loop_meta_step(net, x, y, config.learner.meta_step * (1 - progress), adam, steps=STEPS,
                           mini_batch=mini_batch, generator=shuffles)
        trained += time.perf_counter() - begin
        if iteration % args.every == 0:
            accuracy, ci = test_accuracy(net, [test])
            point = {"iteration": iteration, "train_seconds": trained, "test_accuracy": accuracy, "ci95": ci}
            own = ""
            if variant.startswith("nas-meta"):  # also as nas-meta scores it (a carried state adapts from that state)
                point["own_test_accuracy"] = float(learner.query_scores(test, steps=TEST_STEPS)[1].mean())
                own = f"; nas-meta's own scoring {100 * point['own_test_accuracy']:.2f}%"
            curve.append(point)
            print(f"{variant} {iteration}: {100 * accuracy:.2f}% ± {100 * ci:.2f} ({trained:.0f} s){own}", flush=True)
    return {"variant": variant, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="supervised-reptile,nas-meta")
    parser.add_argument("--iterations", type=int, default=2500)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--episodes", type=int, default=200, help="the first N of the 600 fixed test episodes")
    parser.add_argument("--data")
    parser.add_argument("--out")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    results = [run(v, args) for v in variants]
    if args.out:
        Path(args.out).write_text(json.dumps({"iterations": args.iterations, "episodes": args.episodes,
                                              "results": results}, indent=2))


if __name__ == "__main__":
    main()
