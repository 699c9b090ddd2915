"""Test accuracy against CPU minutes of meta-training for any one Omniglot config, on its own fixed test episodes.

The quality matrix (``quality_matrix.py``) covers the four ``maml``-protocol settings; this script gives the same
curve for a config of any protocol or kind of episode, such as Lake's one-shot task (``lake`` protocol, 20-way 1-shot
within one alphabet):

    python benchmarks/config_curve.py studies/baselines/maml-cpu-lake-20w1s.yaml [--set KEY=VALUE ...]
                                      [--minutes 60] [--every 15] [--episodes 600]
                                      [--out benchmarks/results/lake] [--data ../shared/data/omniglot] [--dry-run]

The run's raw records (the config, and the test accuracy after every ``--every`` minutes and at the end) go to
``OUT/<config name>.curve.json``. Run it alone on the machine: minutes of CPU are what it measures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nas_meta.config import load_train_config
from nas_meta.training import load_workspace
from quality_matrix import DRY_RUN_TIMES, add_curve_arguments, curve, dry_run_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a train config (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    add_curve_arguments(parser, minutes=60.0, every=15.0, out="lake")
    args = parser.parse_args()
    config = load_train_config(args.config, args.set)
    if config.task.family_info.regression:
        parser.error(f"{args.config}: task.family {config.task.family} is scored by its MSE, not accuracy; "
                     "benchmarks/sinusoid.py measures it")
    seconds, every, episodes = args.minutes * 60, args.every * 60, args.episodes
    if args.dry_run:
        seconds, every, episodes = DRY_RUN_TIMES
        config = dry_run_config(config)
    device = torch.device(args.device)
    print(f"{config.name}: {seconds / 60:.1f} min, scored on {episodes} test episodes every {every / 60:.1f} min",
          flush=True)
    run = curve(config, seconds, every, episodes, load_workspace(config, args.data, device), device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{config.name}.curve.json").write_text(json.dumps(run, indent=2) + "\n")


if __name__ == "__main__":
    main()
