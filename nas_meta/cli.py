"""Command line interface: each subcommand parses its arguments, calls one library function, prints the result."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._version import __version__

logger = logging.getLogger("nas_meta.cli")


def _data_info(args: argparse.Namespace) -> int:
    from .data import data_info, dumps

    print(dumps(data_info(args.data)))
    return 0


def _train(args: argparse.Namespace) -> int:
    from .api import train_iter
    from .config import load_train_config
    from .progress import RunBar, interactive, log_dev
    from .training import DevScore, End, Result, Step

    config = load_train_config(args.config, args.set or ())
    bar = RunBar(config.budget, enabled=interactive(args.quiet))
    result: Result | None = None
    try:
        for record in train_iter(config, args.out, data=args.data, device=args.device, seed=args.seed):
            if isinstance(record, Step):
                bar.step(record)
            elif isinstance(record, DevScore):
                log_dev(record)
            elif isinstance(record, End):
                logger.info("training ended: %s after %s iterations, %.1f s of meta-training (%.1f s in all) %s",
                            record.status, record.iterations, record.train_seconds, record.elapsed, record.reason)
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
    import torch

    from .api import bench
    from .errors import ConfigError

    try:
        result = bench(strategy=args.learner, ways=args.ways, shots=args.shots, query=args.query,
                       meta_batch=args.meta_batch, steps=args.steps, iterations=args.iterations, warmup=args.warmup,
                       device=args.device, tune_memory=not args.no_tune_allocator)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
        if "memory" not in str(err).lower():
            raise
        raise ConfigError(f"--meta-batch {args.meta_batch} tasks of {args.ways} ways x ({args.shots} + {args.query}) "
                          f"images do not fit in memory on {args.device}; use fewer.") from None
    print(json.dumps(result))
    return 0


def _search(args: argparse.Namespace) -> int:
    from .api import run_search
    from .config import load_study_spec
    from .errors import StudyFinished
    from .progress import SearchBars, interactive
    from .resources import study_file
    from .studies import summarize

    spec = load_study_spec(study_file(args.study), args.set or ())
    bars = SearchBars(spec.budget, enabled=interactive(args.quiet) and not args.worker_of_pool)
    try:
        study = run_search(args.study, storage=args.storage or os.environ.get("NAS_META_STORAGE", "").strip() or None,
                           study_name=args.study_name, n_trials=args.n_trials, timeout=args.timeout,
                           workers=args.workers, device=args.device, data=args.data, force=args.force,
                           listener=bars, overrides=args.set or ())
    except StudyFinished as err:
        if args.worker_of_pool:
            return 0
        print(f"nas-meta: {err}", file=sys.stderr)
        return 0
    finally:
        bars.close()
    if not args.worker_of_pool:
        print(json.dumps(summarize(study), indent=2, default=str))
    return 0


def _storage_from(args: argparse.Namespace) -> str:
    """--storage, else the storage of a study file given as STUDY, else an error."""
    from .config import load_study_spec
    from .errors import ConfigError
    from .resources import study_file as study_file_of
    from .storage import default_storage_url

    study_file = getattr(args, "study_file", None)
    if study_file:  # a path or a shipped study's name, checked even when --storage says where to look
        study_file = study_file_of(study_file)
        if not study_file.is_file():
            raise ConfigError(f"{study_file}: no such file.")
    from_env = os.environ.get("NAS_META_STORAGE", "").strip()
    if args.storage or from_env:
        return str(args.storage or from_env)
    if study_file:
        spec = load_study_spec(study_file)
        return spec.storage or default_storage_url(getattr(args, "study_name", None) or spec.name)
    name = getattr(args, "study_name", None)
    if name:
        return default_storage_url(name)
    raise ConfigError("give --storage URL or a study file (STUDY.yaml) to find the storage.")


def _export_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .api import load_learner
    from .errors import ConfigError
    from .inference import check_model_target, export_model, read_support_folder

    check_model_target(Path(args.out), Path(args.learner), Path(args.support))
    images, labels = read_support_folder(args.support)
    learner = load_learner(args.learner, device="cpu")
    try:
        classifier = learner.adapt(images, labels, steps=args.steps, transductive=args.transductive)
    except (TypeError, ValueError) as err:  # the support set breaks the image contract
        raise ConfigError(f"--support {args.support!r}: {err}") from None
    path = export_model(classifier, args.out, args.format)
    print(json.dumps({"model": str(path), "labels": str(path) + ".labels.json", "format": args.format,
                      "classes": [str(c) for c in classifier.classes], "image_size": classifier.image_size}, indent=2))
    return 0


def _studies(args: argparse.Namespace) -> int:
    from .config import load_search_space, load_study_spec
    from .resources import shipped_spaces, shipped_studies
    from .storage import open_storage
    from .studies import study_overview

    print("shipped studies (nas-meta search NAME):")
    for name, path in shipped_studies().items():
        spec = load_study_spec(path)
        print(f"  {name:<16} {spec.task.described(spec.data.protocol)}, space {spec.search_space.rsplit('/', 1)[-1].removesuffix('.yaml')}, "
              f"{spec.n_trials} trials")
    print("shipped search spaces:")
    for name, path in shipped_spaces().items():
        space = load_search_space(path)
        print(f"  {name:<16} {len(space.parameters)} parameters" + (f": {space.description}" if space.description else ""))
    storage = args.storage or os.environ.get("NAS_META_STORAGE", "").strip()
    if storage:
        handle = open_storage(storage, read_only=True)
        rows = study_overview(handle)
        print(f"studies in {handle.url}:" + ("" if rows else " none"))
        for row in rows:
            best = "-" if row["best_dev_loss"] is None else f"{row['best_dev_loss']:.4f}"
            print(f"  {row['study']:<24} {row['trials']:>5} trials  best dev loss {best}  started {row['started']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_study

    print(json.dumps(export_study(args.study_name, _storage_from(args), args.out), indent=2))
    return 0


def log_test_run(run: dict[str, Any]) -> None:
    """Log one trained run of a comparison: its test score (accuracy, or the MSE of a regression family)."""
    score = "accuracy" if "test_accuracy" in run else "mse"
    logger.info("%s seed %s: test %s %.4f after %s iterations", run["method"], run["seed"], score,
                run[f"test_{score}"], run["iterations"])


def _compare(args: argparse.Namespace) -> int:
    import dataclasses

    from .compare import compare
    from .config import MAX_ITERATIONS, load_train_config

    config = load_train_config(args.config)
    budget = config.budget
    if args.budget_seconds is not None:  # the same compute for every method: seconds alone, unless a cap is given too
        budget = dataclasses.replace(budget, seconds=args.budget_seconds, iterations=(
            args.budget_iterations if args.budget_iterations is not None else MAX_ITERATIONS))
    elif args.budget_iterations is not None:
        budget = dataclasses.replace(budget, iterations=args.budget_iterations)
    baselines = [b for b in args.baselines.split(",") if b]

    compare(config, args.out, baselines=baselines, seeds=args.seeds, episodes=args.episodes, budget=budget,
            data=args.data, device=args.device, on_run=log_test_run)
    with open(f"{args.out}/comparison.md") as f:
        print(f.read())
    return 0


def _finalize(args: argparse.Namespace) -> int:
    from .config import load_study_spec
    from .finalize import finalize
    from .resources import study_file

    storage = _storage_from(args)  # checks the study file first
    name = args.study_name or load_study_spec(study_file(args.study_file)).name
    baselines = [b for b in args.baselines.split(",") if b]

    finalize(name, storage, args.out, budget_seconds=args.budget_seconds, top_k=args.top_k,
             seeds=args.seeds, episodes=args.episodes, baselines=baselines, data=args.data, device=args.device,
             on_run=log_test_run)
    with open(f"{args.out}/finalize.md") as f:
        print(f.read())
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from .dashboard import run_dashboard

    run_dashboard(_storage_from(args), host=args.host, port=args.port)
    return 0


# -- arguments: every number checked when parsed, with the allowed range in the message ------------------

def _number(kind: type, low: float, high: float | None = None, *, low_open: bool = False) -> Any:
    """An argparse ``type`` accepting ``kind`` values in [low, high] ((low, high] with ``low_open``)."""
    def show(x: float) -> str:
        return f"{x:g}" if kind is float else str(int(x))

    rule = (f"{'a number' if kind is float else 'an integer'} {'>' if low_open else '>='} {show(low)}"
            + (f" and <= {show(high)}" if high is not None else ""))

    def parse(text: str) -> int | float:
        shown = repr(text if len(text) <= 40 else text[:37] + "...")
        try:
            value: int | float = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown} is not allowed: expected {rule}.") from None
        from .config import finite  # (an int beyond any float, 10**400, is out of every range)

        if not finite(value) or (value <= low if low_open else value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{shown} is not allowed: expected {rule}.")
        return value

    parse.__name__ = kind.__name__
    return parse


def _study_name(text: str) -> str:
    from .config import STUDY_NAME, STUDY_NAME_RULE

    if STUDY_NAME.fullmatch(text) is None:
        shown = repr(text if len(text) <= 40 else text[:37] + "...")
        raise argparse.ArgumentTypeError(f"{shown} is not allowed: expected {STUDY_NAME_RULE}.")
    return text


SEED = _number(int, 0, 2**32 - 1)
COUNT = _number(int, 1, 10**6)
WAYS = _number(int, 2, 1000)
SHOTS = _number(int, 1, 19)
STEPS = _number(int, 0, 10**4)
SECONDS = _number(float, 0, 10**9, low_open=True)
WORKERS = _number(int, 1, 1024)
PORT = _number(int, 1, 65535)


class _Parser(argparse.ArgumentParser):
    """Help texts with their defaults, examples kept as written; -q/-v accepted anywhere on the command line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        # "-inf", "-nan" and "-1e3" are values to check (and refuse with the range), not unknown options
        self._negative_number_matcher = re.compile(r"^-(\d+|\d*\.\d+|\d+e\d+|inf|infinity|nan)$", re.IGNORECASE)

    def error(self, message: str) -> NoReturn:
        """One line: what is wrong and what is allowed (``--help`` shows the usage)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    default: Any = 0 if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="count", default=default,
                   help="more log output: debug lines and Optuna's own notices (default: off)")
    p.add_argument("-q", "--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="warnings and errors only, no progress bar (default: off)")


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", help="folder holding images_background.zip and images_evaluation.zip "
                   "(default: $NAS_META_DATA, else the user cache, downloading the official zips there)")


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N "
                   "(default: auto)")


def _storage_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--storage", metavar="URL", help="journal:PATH, sqlite:///PATH or postgresql://USER[:PASSWORD]"
                   f"@HOST[:PORT]/DATABASE (default: $NAS_META_STORAGE, else {default})")


def _set_arg(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override a field of the file, value read as "
                   f"YAML, e.g. --set {example}; repeatable (default: none)")


def _command(sub: Any, name: str, summary: str, example: str, func: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=summary,
                                                epilog=f"example:\n  {example}\n")
    _common(p)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    from .config import STRATEGIES

    parser = _Parser(prog="nas-meta", description="Search for few-shot learners on Omniglot.",
                     epilog="example:\n  nas-meta search studies/smoke.yaml --data ../shared/data/omniglot\n")
    parser.add_argument("--version", action="version", version=f"nas-meta {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    data = _command(sub, "data", "Omniglot data set commands", "nas-meta data info --data DIR", None)
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND", parser_class=_Parser)
    info = _command(data_sub, "info", "print alphabets, characters and images per zip, and the protocols' splits",
                    "nas-meta data info --data ../shared/data/omniglot", _data_info)
    _data_arg(info)

    train = _command(sub, "train", "meta-train one learner config and save it",
                     "nas-meta train studies/baselines/maml-5w1s.yaml --out runs/maml", _train)
    train.add_argument("config", help="training config YAML (e.g. studies/baselines/maml-5w1s.yaml)")
    train.add_argument("--out", required=True, help="folder to save config, weights and metrics in (new, empty, "
                       "or a learner folder to replace)")
    train.add_argument("--seed", type=SEED, help="override the config's seed (default: the config's)")
    _set_arg(train, "learner.inner_lr=0.1")
    _data_arg(train)
    _device_arg(train)

    ev = _command(sub, "evaluate", "score a saved learner on fixed dev or test episodes",
                  "nas-meta evaluate runs/maml --split test --episodes 600", _evaluate)
    ev.add_argument("learner", help="folder written by 'nas-meta train'")
    ev.add_argument("--split", default="test", choices=["dev", "test"], help="episode set (default: test)")
    ev.add_argument("--episodes", type=COUNT, default=600, help="fixed episodes to score (default: 600)")
    for flag, kind, what in (("--ways", WAYS, "classes per episode"), ("--shots", SHOTS, "support examples per class"),
                             ("--query", COUNT, "query examples per class"),
                             ("--steps", STEPS, "adaptation steps (default: the config's test_steps)")):
        ev.add_argument(flag, type=kind, help=what if "default" in what else f"{what} (default: the learner's config)")
    ev.add_argument("--seed", type=SEED, help="episode-set seed (default: the config's evaluation.seed)")
    _data_arg(ev)
    _device_arg(ev)

    bench = _command(sub, "bench", "time meta-training on synthetic episodes of the default network",
                     "nas-meta bench --learner maml --ways 5 --shots 1 --meta-batch 32", _bench)
    bench.add_argument("--learner", default="maml", choices=list(STRATEGIES), help="strategy (default: maml)")
    for flag, kind, default, what in (("--ways", WAYS, 5, "classes per task"), ("--shots", SHOTS, 1, "shots"),
                                      ("--query", COUNT, 1, "query examples per class"),
                                      ("--meta-batch", COUNT, 32, "tasks per meta-iteration"),
                                      ("--steps", _number(int, 1, 10**4), 1, "inner steps"),
                                      ("--iterations", COUNT, 20, "timed meta-iterations"),
                                      ("--warmup", STEPS, 3, "untimed meta-iterations first")):
        bench.add_argument(flag, type=kind, default=default, help=f"{what} (default: {default})")
    bench.add_argument("--no-tune-allocator", action="store_true",
                       help="leave glibc's allocator as it is, to measure what tuning it gains (default: tuned)")
    _device_arg(bench)

    srch = _command(sub, "search", "create or resume a search study and run trials",
                    "nas-meta search studies/smoke.yaml --data ../shared/data/omniglot", _search)
    srch.add_argument("study", help="study definition YAML (e.g. studies/omniglot-5w1s.yaml)")
    _storage_arg(srch, "the study file's storage, else journal:runs/<study>.journal")
    srch.add_argument("--study-name", type=_study_name, help="the study's name in the storage (default: the study "
                      "file's name)")
    srch.add_argument("--n-trials", type=COUNT, help="the study's total number of trials, over all workers and runs "
                      "(default: the study file's n_trials)")
    srch.add_argument("--timeout", type=SECONDS, help="stop starting trials after this many seconds "
                      "(default: the study file's timeout, else none)")
    srch.add_argument("--workers", type=WORKERS, default=1, help="worker processes on this machine, one per GPU "
                      "when there are GPUs (default: 1)")
    srch.add_argument("--force", action="store_true", help="resume even if the study file changed (default: refuse)")
    _set_arg(srch, "budget.seconds=60")
    srch.add_argument("--worker-of-pool", action="store_true", help=argparse.SUPPRESS)
    _data_arg(srch)
    _device_arg(srch)

    em = _command(sub, "export-model", "adapt a saved learner to a support set and write the adapted network as "
                  "TorchScript or ONNX", "nas-meta export-model runs/maml --support my_alphabet/ --out model.pt",
                  _export_model)
    em.add_argument("learner", help="folder written by 'nas-meta train' (or an export's best/)")
    em.add_argument("--support", required=True, metavar="FOLDER", help="the support set: FOLDER/<label>/<image>.png, "
                    "one subfolder per class")
    em.add_argument("--out", required=True, help="the model file to write (labels go to <out>.labels.json)")
    em.add_argument("--format", default="torchscript", choices=["torchscript", "onnx"],
                    help="torchscript, or onnx with pip install 'nas-meta[onnx]' (default: torchscript)")
    em.add_argument("--steps", type=STEPS, help="adaptation steps (default: the config's test_steps)")
    em.add_argument("--transductive", action="store_true", help="normalise each batch with its own statistics (the "
                    "MAML paper's test protocol) instead of the support set's (default: the support set's)")

    studies = _command(sub, "studies", "list the shipped studies and search spaces, and the studies in a storage",
                       "nas-meta studies --storage journal:runs/omniglot-5w1s.journal", _studies)
    studies.add_argument("--storage", metavar="URL", help="also list the studies in this storage (default: "
                         "$NAS_META_STORAGE, else none)")

    exp = _command(sub, "export", "write a study's trials tables, best config, report and summary",
                   "nas-meta export --study-name omniglot-5w1s --out runs/export", _export)
    exp.add_argument("--study-name", required=True, type=_study_name, help="the study to export")
    _storage_arg(exp, "journal:runs/<study>.journal")
    exp.add_argument("--out", required=True, help="folder to write (new or empty, or an earlier export to replace)")

    cmp_ = _command(sub, "compare", "train a config and the MAML/Reptile baselines alike; compare them on test",
                    "nas-meta compare runs/export/best.yaml --baselines maml,reptile --seeds 3 --out runs/compare",
                    _compare)
    cmp_.add_argument("config", help="training config YAML (e.g. an export's best.yaml)")
    cmp_.add_argument("--baselines", default="maml,reptile", help="comma-separated baseline names (default: maml,reptile)")
    cmp_.add_argument("--seeds", type=_number(int, 1, 1000), default=3, help="training seeds per method (default: 3)")
    cmp_.add_argument("--episodes", type=COUNT, default=600, help="fixed test episodes (default: 600)")
    cmp_.add_argument("--budget-iterations", type=COUNT, help="meta-iterations per run (default: the config's, or "
                      "none with --budget-seconds)")
    cmp_.add_argument("--budget-seconds", type=SECONDS, help="seconds of meta-training per run, the same compute for "
                      "every method: the config's iteration cap is dropped unless --budget-iterations is given too "
                      "(default: the config's budget)")
    cmp_.add_argument("--out", required=True, help="folder to write the runs and tables in")
    _data_arg(cmp_)
    _device_arg(cmp_)

    fin = _command(sub, "finalize", "retrain a study's best trials at a full budget, choose by dev loss, compare the "
                   "chosen one with MAML and Reptile at that budget",
                   "nas-meta finalize studies/omniglot-5w1s.yaml --top-k 5 --budget-seconds 900 --seeds 3 "
                   "--out runs/finalize", _finalize)
    fin.add_argument("study_file", metavar="STUDY", help="the study file (or a shipped study's name) whose trials to "
                     "retrain; its storage and name unless --storage / --study-name say otherwise")
    fin.add_argument("--study-name", type=_study_name, help="the study's name in the storage (default: the file's)")
    _storage_arg(fin, "the study file's storage")
    fin.add_argument("--top-k", type=_number(int, 1, 1000), default=5, help="best trials to retrain (default: 5)")
    fin.add_argument("--budget-seconds", type=SECONDS, required=True, help="seconds of meta-training per run, for "
                     "the candidates and the baselines alike (no iteration cap)")
    fin.add_argument("--seeds", type=_number(int, 1, 1000), default=3, help="training seeds per config (default: 3)")
    fin.add_argument("--episodes", type=COUNT, default=600, help="fixed test episodes (default: 600)")
    fin.add_argument("--baselines", default="maml,reptile", help="comma-separated baseline names (default: maml,reptile)")
    fin.add_argument("--out", required=True, help="folder to write the runs, the selection and the comparison in")
    _data_arg(fin)
    _device_arg(fin)

    dash = _command(sub, "dashboard", "serve optuna-dashboard on a study storage, read-only (localhost by default)",
                    "nas-meta dashboard studies/omniglot-5w1s.yaml --port 8080", _dashboard)
    dash.add_argument("study_file", nargs="?", metavar="STUDY.yaml", help="a study file whose storage to serve")
    _storage_arg(dash, "the study file's storage")
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    dash.add_argument("--port", type=PORT, default=8080, help="port (default: 8080)")
    return parser


def _quiet_optuna(verbose: int) -> None:
    """Optuna's own notices (study created, experimental features, "no complete trials" while drawing figures)
    are for Optuna's users; nas-meta says what matters itself. ``-v`` brings them back."""
    import warnings

    import optuna

    if verbose:
        return
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"optuna(_dashboard)?(\.|$)")


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .errors import NasMetaError, Terminated
    from .runtime import check_interrupt, configure_logging, defer_signals, raise_signals

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(-1 if args.quiet else args.verbose)
    _quiet_optuna(args.verbose)
    if args.func is _dashboard:
        raise_signals()  # the server blocks outside nas-meta's loops: stop it where the signal lands
    else:
        defer_signals()  # the work stops at its next safe point, the running trial closed and queued again
    try:
        with logging_redirect_tqdm(loggers=[logging.getLogger("nas_meta")]):  # log lines never land inside a bar
            code = int(args.func(args))
        check_interrupt()  # a signal a command never polled for (it finished first) still ends with its status
        return code
    except NasMetaError as err:  # the user's to fix: one line; anything else is a bug and shows its traceback
        print(f"nas-meta: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"nas-meta: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130


def run() -> None:
    """The ``nas-meta`` console script: :func:`main`, then exit with its status.

    After Ctrl-C (status 130) or SIGTERM (143) the storage is already consistent (the running trial closed and
    queued again), so the process leaves at once: the interpreter's teardown after a handled KeyboardInterrupt
    sometimes turned the status into death by the signal instead.
    """
    try:
        code = main()
    except BrokenPipeError:  # the reader went away (`nas-meta studies | head`): stop quietly, as a pipe writer does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        os._exit(141)
    if code in (130, 143):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
