"""Timing meta-training steps on synthetic episodes: the fields `nas-meta bench` reports and its CLI line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nas_meta import __version__
from nas_meta.bench import bench
from nas_meta.runtime import cuda_graphs_enabled
from tests.learners.helpers import tiny_config

KEYS = {"impl", "strategy", "first_order", "ways", "shots", "query", "meta_batch", "steps", "iterations", "device",
        "threads", "meta_iters_per_s", "tasks_per_s", "peak_memory_mb", "allocator_tuned", "cuda_graphs", "warmup"}


@pytest.mark.parametrize(("strategy", "first_order"), [("maml", False), ("fomaml", True)])
def test_bench_reports_its_settings_and_positive_rates(strategy: str, first_order: bool) -> None:
    result = bench(strategy=strategy, ways=3, shots=1, query=1, meta_batch=2, steps=1, iterations=2, warmup=1,
                   device="cpu", config=tiny_config(), tune_memory=False)
    assert set(result) == KEYS
    assert result["impl"] == f"nas-meta-{__version__}" and result["device"] == "cpu"
    assert (result["strategy"], result["first_order"]) == (strategy, first_order)
    assert (result["ways"], result["shots"], result["query"], result["meta_batch"], result["steps"],
            result["iterations"]) == (3, 1, 1, 2, 1, 2)
    assert result["allocator_tuned"] is False and result["threads"] >= 1
    assert result["meta_iters_per_s"] > 0 and result["peak_memory_mb"] > 0
    assert result["tasks_per_s"] == pytest.approx(2 * result["meta_iters_per_s"])
    assert result["cuda_graphs"] is False and result["warmup"] == 1  # eager on a CPU: the warm-up asked for


def test_bench_runs_on_the_test_device(device: torch.device) -> None:
    result = bench(device=str(device), iterations=1, warmup=0, meta_batch=2, config=tiny_config(), tune_memory=False)
    assert result["device"] == str(device) and result["iterations"] == 1 and result["meta_batch"] == 2
    assert result["meta_iters_per_s"] > 0 and result["peak_memory_mb"] > 0
    # a replayed step is timed only after its capture: eager warm-up calls and the capturing call come first
    graphed = device.type == "cuda" and cuda_graphs_enabled()
    assert result["cuda_graphs"] is graphed and result["warmup"] == (4 if graphed else 0)


@pytest.mark.slow
def test_bench_prints_one_json_line() -> None:
    done = subprocess.run([sys.executable, "-m", "nas_meta.cli", "bench", "--learner", "fomaml", "--iterations", "2",
                           "--warmup", "1", "--meta-batch", "4", "--device", "cpu"],
                          check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["strategy"] == "fomaml" and result["meta_iters_per_s"] > 0 and result["peak_memory_mb"] > 0
    assert result["tasks_per_s"] == pytest.approx(4 * result["meta_iters_per_s"])
