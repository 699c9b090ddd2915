"""Ablation: nas-meta's plain-op batch-statistics norm against the fused F.batch_norm kernel, in the MAML step.

Both compute the same function (tests/test_architectures.py checks values, gradients and second derivatives);
this times `nas-meta bench` with each, alternately, in separate processes.
    python benchmarks/ablation_batchnorm.py [--rounds 3] [--learner maml]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import json, sys, torch
import nas_meta.architectures as A
from nas_meta.api import bench
if sys.argv[1] == "fused":
    A.BatchStatNorm2d.forward = lambda self, x: torch.nn.functional.batch_norm(
        x, None, None, self.weight, self.bias, True, 0.0, self.eps)
print(json.dumps(bench(strategy=sys.argv[2], iterations=20, warmup=3, device="cpu")))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--learner", default="maml")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"plain-ops": [], "fused": []}
    for _ in range(args.rounds):
        for variant in rates:
            out = subprocess.run([sys.executable, "-c", CHILD, variant, args.learner], check=True, capture_output=True,
                                 text=True).stdout
            rates[variant].append(json.loads(out)["meta_iters_per_s"])
    print(f"| norm ({args.learner}) | meta-it/s per round | median |\n|---|---|---|")
    for variant, values in rates.items():
        print(f"| {variant} | {', '.join(f'{v:.2f}' for v in values)} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
