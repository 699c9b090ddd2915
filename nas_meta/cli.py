"""Command line interface: each subcommand parses its arguments, calls one library function, prints the result."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from ._version import __version__

logger = logging.getLogger("nas_meta.cli")


def _data_info(args: argparse.Namespace) -> int:
    from .data import data_info, dumps

    print(dumps(data_info(args.data)))
    return 0


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import train_iter
    from .config import load_train_config
    from .training import DevScore, End, Result, Step

    config = load_train_config(args.config)
    total = config.budget.iterations
    bar = tqdm(total=total, unit="it", disable=not sys.stderr.isatty() or args.quiet, dynamic_ncols=True)
    result: Result | None = None
    try:
        for record in train_iter(config, args.out, data=args.data, device=args.device, seed=args.seed):
            if isinstance(record, Step):
                bar.update(1)
                if "loss" in record.metrics:
                    bar.set_postfix(loss=f"{record.metrics['loss']:.3f}", acc=f"{record.metrics.get('accuracy', 0.0):.3f}")
            elif isinstance(record, DevScore):
                logger.info("iteration %s: dev loss %.4f, dev accuracy %.4f ± %.4f", record.iteration,
                            record.dev_loss, record.dev_accuracy, record.dev_accuracy_ci95)
            elif isinstance(record, End):
                logger.info("training ended: %s after %s iterations in %.1f s %s", record.status,
                            record.iterations, record.elapsed, record.reason)
            else:
                result = record
    finally:
        bar.close()
    assert result is not None
    metrics = {k: v for k, v in result.metrics.to_dict().items() if k != "dev_history"}
    print(json.dumps({"out": str(result.path), **metrics}, indent=2))
    return 0 if result.metrics.status != "diverged" else 3


def _evaluate(args: argparse.Namespace) -> int:
    from .api import evaluate_learner

    result = evaluate_learner(args.learner, split=args.split, episodes=args.episodes, ways=args.ways, shots=args.shots,
                              query=args.query, steps=args.steps, data=args.data, device=args.device, seed=args.seed)
    print(json.dumps(result, indent=2))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .api import bench

    result = bench(strategy=args.learner, ways=args.ways, shots=args.shots, query=args.query,
                   meta_batch=args.meta_batch, steps=args.steps, iterations=args.iterations, warmup=args.warmup,
                   device=args.device, tune_memory=not args.no_tune_allocator)
    print(json.dumps(result))
    return 0


def _search(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import run_search
    from .errors import StudyFinished
    from .studies import summarize

    bar = tqdm(total=args.n_trials, unit="trial", disable=not sys.stderr.isatty() or args.quiet or args.worker_of_pool)

    def on_trial(trial: object) -> None:
        bar.update(1)

    try:
        study = run_search(args.study, storage=args.storage, study_name=args.study_name, n_trials=args.n_trials,
                         timeout=args.timeout, workers=args.workers, device=args.device, data=args.data,
                         force=args.force, on_trial=on_trial)
    except StudyFinished as err:
        if args.worker_of_pool:
            return 0
        print(f"nas-meta: {err}", file=sys.stderr)
        return 0
    finally:
        bar.close()
    if not args.worker_of_pool:
        print(json.dumps(summarize(study), indent=2, default=str))
    return 0


def _storage_from(args: argparse.Namespace) -> str:
    """--storage, else the storage of a study file given as STUDY, else an error."""
    from .config import load_study_spec
    from .errors import ConfigError
    from .storage import default_storage_url

    if args.storage:
        return str(args.storage)
    study_file = getattr(args, "study_file", None)
    if study_file:
        spec = load_study_spec(study_file)
        return spec.storage or default_storage_url(getattr(args, "study_name", None) or spec.name)
    name = getattr(args, "study_name", None)
    if name:
        return default_storage_url(name)
    raise ConfigError("give --storage URL or a study file (STUDY.yaml) to find the storage.")


def _export(args: argparse.Namespace) -> int:
    from .export import export_study

    print(json.dumps(export_study(args.study_name, _storage_from(args), args.out), indent=2))
    return 0


def _compare(args: argparse.Namespace) -> int:
    import dataclasses

    from .compare import compare
    from .config import load_train_config

    config = load_train_config(args.config)
    budget = config.budget
    if args.budget_iterations is not None or args.budget_seconds is not None:
        budget = dataclasses.replace(budget, iterations=args.budget_iterations or budget.iterations,
                                     seconds=args.budget_seconds if args.budget_seconds is not None else budget.seconds)
    baselines = [b for b in args.baselines.split(",") if b]

    def on_run(run: dict[str, object]) -> None:
        logger.info("%s seed %s: test accuracy %.4f after %s iterations", run["method"], run["seed"],
                    run["test_accuracy"], run["iterations"])

    compare(config, args.out, baselines=baselines, seeds=args.seeds, episodes=args.episodes, budget=budget,
            data=args.data, device=args.device, on_run=on_run)
    with open(f"{args.out}/comparison.md") as f:
        print(f.read())
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    try:
        import optuna_dashboard
    except ImportError:
        print("nas-meta: error: the dashboard needs optuna-dashboard: pip install 'nas-meta[dashboard]'", file=sys.stderr)
        return 2
    from .report import attach_to_dashboard
    from .storage import open_storage, study_names

    handle = open_storage(_storage_from(args))
    import optuna

    from .export import trials_table

    for name in study_names(handle):
        study = optuna.load_study(study_name=name, storage=handle.storage)
        attach_to_dashboard(study, trials_table(study))
    logger.info("optuna-dashboard on http://%s:%d for %s", args.host, args.port, handle.url)
    optuna_dashboard.run_server(handle.storage, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import STRATEGIES

    parser = argparse.ArgumentParser(prog="nas-meta", description="Search for few-shot learners on Omniglot.")
    parser.add_argument("--version", action="version", version=f"nas-meta {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bar")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", help="folder with images_background.zip and images_evaluation.zip "
                       "(default: $NAS_META_DATA, else the user cache, downloading there)")

    def device_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")

    data = sub.add_parser("data", help="Omniglot data set commands")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    info = data_sub.add_parser("info", help="print alphabets, characters and images per zip and protocol splits")
    data_arg(info)
    info.set_defaults(func=_data_info)

    train = sub.add_parser("train", help="meta-train one learner config and save it")
    train.add_argument("config", help="training config YAML (e.g. studies/baselines/maml-5w1s.yaml)")
    train.add_argument("--out", required=True, help="folder to save config, weights and metrics in")
    train.add_argument("--seed", type=int, help="override the config's seed")
    data_arg(train)
    device_arg(train)
    train.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="score a saved learner on fixed dev or test episodes")
    ev.add_argument("learner", help="folder written by 'nas-meta train'")
    ev.add_argument("--split", default="test", choices=["dev", "test"])
    ev.add_argument("--episodes", type=int, default=600)
    ev.add_argument("--ways", type=int)
    ev.add_argument("--shots", type=int)
    ev.add_argument("--query", type=int, help="query examples per class (default: the learner's config)")
    ev.add_argument("--steps", type=int, help="adaptation steps (default: the config's test_steps)")
    ev.add_argument("--seed", type=int, help="episode-set seed (default: the config's evaluation.seed)")
    data_arg(ev)
    device_arg(ev)
    ev.set_defaults(func=_evaluate)

    bench = sub.add_parser("bench", help="time meta-training on synthetic episodes of the default network")
    bench.add_argument("--learner", default="maml", choices=list(STRATEGIES))
    bench.add_argument("--ways", type=int, default=5)
    bench.add_argument("--shots", type=int, default=1)
    bench.add_argument("--query", type=int, default=1)
    bench.add_argument("--meta-batch", type=int, default=32)
    bench.add_argument("--steps", type=int, default=1)
    bench.add_argument("--iterations", type=int, default=20)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--no-tune-allocator", action="store_true",
                       help="leave glibc's allocator as it is (to measure what tuning it gains)")
    device_arg(bench)
    bench.set_defaults(func=_bench)
    srch = sub.add_parser("search", help="create or resume a search study and run trials")
    srch.add_argument("study", help="study definition YAML (e.g. studies/omniglot-5w1s.yaml)")
    srch.add_argument("--storage", help="journal:PATH, sqlite:///PATH or postgresql://... (default: the study "
                      "file's, else journal:runs/<study>.journal)")
    srch.add_argument("--study-name", help="default: the study file's name")
    srch.add_argument("--n-trials", type=int, help="the study's total number of trials (default: the study file's)")
    srch.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    srch.add_argument("--workers", type=int, default=1, help="worker processes on this machine (one per GPU)")
    srch.add_argument("--force", action="store_true", help="resume even if the study file changed")
    srch.add_argument("--worker-of-pool", action="store_true", help=argparse.SUPPRESS)
    data_arg(srch)
    device_arg(srch)
    srch.set_defaults(func=_search)

    exp = sub.add_parser("export", help="write trials tables, best config, report and summary of a study")
    exp.add_argument("--study-name", required=True)
    exp.add_argument("--storage", help="the study's storage (default: journal:runs/<study>.journal)")
    exp.add_argument("--out", required=True)
    exp.set_defaults(func=_export)

    cmp_ = sub.add_parser("compare", help="train a config and the MAML/Reptile baselines alike; compare on test")
    cmp_.add_argument("config", help="training config YAML (e.g. an export's best.yaml)")
    cmp_.add_argument("--baselines", default="maml,reptile", help="comma-separated baseline names")
    cmp_.add_argument("--seeds", type=int, default=3)
    cmp_.add_argument("--episodes", type=int, default=600)
    cmp_.add_argument("--budget-iterations", type=int, help="meta-iterations per run (default: the config's)")
    cmp_.add_argument("--budget-seconds", type=float, help="seconds per run (default: the config's)")
    cmp_.add_argument("--out", required=True)
    data_arg(cmp_)
    device_arg(cmp_)
    cmp_.set_defaults(func=_compare)

    dash = sub.add_parser("dashboard", help="serve optuna-dashboard on a study storage (localhost by default)")
    dash.add_argument("study_file", nargs="?", metavar="STUDY.yaml", help="a study file whose storage to serve")
    dash.add_argument("--storage")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8080)
    dash.set_defaults(func=_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import NasMetaError
    from .runtime import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(-1 if args.quiet else args.verbose)
    try:
        return int(args.func(args))
    except NasMetaError as err:  # the user's to fix: one line; anything else is a bug and shows its traceback
        print(f"nas-meta: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas-meta: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``nas-meta`` console script: :func:`main`, then exit with its status.

    After Ctrl-C (status 130) the storage is already consistent (the running trial closed and queued again),
    so the process leaves at once: the interpreter's teardown after a handled KeyboardInterrupt sometimes
    turned the status into death by SIGINT (-2) instead of 130.
    """
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
