"""The command line: every number refused when parsed (fast), and end to end through the console script on the
real Omniglot copy (slow)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nas_meta.cli import build_parser
from tests.conftest import nas_meta_cli

TINY = """
name: tiny-{strategy}
task: {{ways: 5, shots: 1, query: 3}}
architecture: {{blocks: 4, channels: 32}}
learner: {{strategy: {strategy}, inner_lr: 0.4, train_steps: 1, test_steps: 5, outer_lr: 0.003, meta_batch: 8}}
budget: {{iterations: {iterations}}}
evaluation: {{dev_episodes: 20, every: 20}}
seed: 3
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, omniglot: Path) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "tiny.yaml"
    config.write_text(TINY.format(strategy="maml", iterations=60))
    done = nas_meta_cli("train", str(config), "--out", str(folder / "learner"), "--data", str(omniglot), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["status"] == "completed" and metrics["iterations"] == 60 and metrics["protocol"] == "maml"
    assert metrics["dev_accuracy"] > 0.4  # well above chance (0.2) after 60 meta-iterations
    return folder / "learner"


@pytest.mark.slow
def test_data_info_prints_counts(omniglot: Path) -> None:
    done = nas_meta_cli("data", "info", "--data", str(omniglot))
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["zips"]["images_evaluation"]["characters"] == 659
    assert info["protocols"]["vinyals"]["dev"]["characters"] == 172


@pytest.mark.slow
def test_evaluate_prints_accuracy_with_ci_on_fixed_test_episodes(trained: Path, omniglot: Path) -> None:
    args = ["evaluate", str(trained), "--split", "test", "--episodes", "40", "--data", str(omniglot)]
    first, second = nas_meta_cli(*args), nas_meta_cli(*args)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["episodes"] == 40 and result["split"] == "test" and result["ways"] == 5
    assert 0.4 < result["accuracy"] <= 1.0 and 0 < result["accuracy_ci95"] < 0.2
    assert json.loads(second.stdout)["accuracy"] == result["accuracy"]  # the same fixed episodes


@pytest.mark.slow
def test_evaluate_other_ways_is_refused_for_maml(trained: Path, omniglot: Path) -> None:
    done = nas_meta_cli("evaluate", str(trained), "--ways", "20", "--episodes", "5", "--data", str(omniglot))
    assert done.returncode == 2
    assert "ways=20: this maml learner meta-learned a 5-way head" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_train_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("learner: {strategy: mamll}\n")
    done = nas_meta_cli("train", str(config), "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"nas-meta: error: {config}: learner.strategy='mamll' is not one of "
        "['fomaml', 'maml', 'metasgd', 'pretrain', 'random', 'reptile']."
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_bad_data_folder(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(TINY.format(strategy="maml", iterations=1))
    done = nas_meta_cli("train", str(config), "--out", str(tmp_path / "o"), "--data", str(tmp_path / "missing"))
    assert done.returncode == 2 and "is not a folder; it must hold images_background.zip" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fomaml", "reptile", "metasgd", "pretrain", "random"])
def test_every_strategy_trains_and_evaluates(strategy: str, tmp_path: Path, omniglot: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(TINY.format(strategy=strategy, iterations=10).replace("inner_lr: 0.4", "inner_lr: 0.1"))
    done = nas_meta_cli("train", str(config), "--out", str(tmp_path / "l"), "--data", str(omniglot))
    assert done.returncode == 0, done.stderr
    ways = "20" if strategy in ("pretrain", "random") else "5"
    done = nas_meta_cli("evaluate", str(tmp_path / "l"), "--episodes", "10", "--ways", ways, "--data", str(omniglot))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["strategy"] == strategy and result["ways"] == int(ways) and 0 <= result["accuracy"] <= 1


# -- every number on the command line, refused when parsed (nothing runs) ------------------------------------------

MINIMAL = {  # the shortest command line of each subcommand that parses
    "data info": ["data", "info"],
    "train": ["train", "c.yaml", "--out", "o"],
    "evaluate": ["evaluate", "runs/x"],
    "bench": ["bench"],
    "search": ["search", "s.yaml"],
    "studies": ["studies"],
    "export": ["export", "--study-name", "s", "--out", "o"],
    "compare": ["compare", "c.yaml", "--out", "o"],
    "dashboard": ["dashboard"],
}
MAX_SEED = 2**32 - 1
INTEGERS = [  # subcommand, option, lowest, highest
    ("evaluate", "--episodes", 1, 10**6), ("evaluate", "--ways", 2, 1000), ("evaluate", "--shots", 1, 19),
    ("evaluate", "--query", 1, 10**6), ("evaluate", "--steps", 0, 10**4), ("evaluate", "--seed", 0, MAX_SEED),
    ("bench", "--ways", 2, 1000), ("bench", "--shots", 1, 19), ("bench", "--query", 1, 10**6),
    ("bench", "--meta-batch", 1, 10**6), ("bench", "--steps", 1, 10**4), ("bench", "--iterations", 1, 10**6),
    ("bench", "--warmup", 0, 10**4),
    ("train", "--seed", 0, MAX_SEED),
    ("search", "--n-trials", 1, 10**6), ("search", "--workers", 1, 1024),
    ("compare", "--seeds", 1, 1000), ("compare", "--episodes", 1, 10**6), ("compare", "--budget-iterations", 1, 10**6),
    ("dashboard", "--port", 1, 65535),
]
SECONDS = [("search", "--timeout"), ("compare", "--budget-seconds")]  # a number > 0 and <= 1e9


def _int_cases() -> list[Any]:
    cases = []
    for sub, option, low, high in INTEGERS:
        rule = f"an integer >= {low} and <= {high}"
        for what, value in [("below", str(low - 1)), ("above", str(high + 1)), ("not-a-number", "five"),
                            ("float", f"{low}.5"), ("nan", "nan"), ("inf", "inf"), ("minus-inf", "-inf")]:
            cases.append(pytest.param(sub, option, value, rule, id=f"{sub}{option}-{what}"))
    return cases


def _seconds_cases() -> list[Any]:
    rule = "a number > 0 and <= 1e+09"
    return [pytest.param(sub, option, value, rule, id=f"{sub}{option}-{what}")
            for sub, option in SECONDS
            for what, value in [("zero", "0"), ("below", "-1"), ("above", "1e10"), ("not-a-number", "soon"),
                                ("nan", "nan"), ("inf", "inf"), ("minus-inf", "-inf"), ("hex", "0x10")]]


def parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The lines argparse writes when it refuses ``argv`` (exit status 2, nothing on stdout)."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    return err.strip().splitlines()


@pytest.mark.parametrize(("sub", "option", "value", "rule"), _int_cases() + _seconds_cases())
def test_a_number_out_of_range_is_refused_naming_the_option_value_and_range(
        sub: str, option: str, value: str, rule: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = parse_error([*MINIMAL[sub], f"{option}={value}"], capsys)
    assert len(lines) == 1  # one line, no usage block
    assert lines[-1] == f"nas-meta {sub}: error: argument {option}: {value!r} is not allowed: expected {rule}."
    if not value.startswith("-") or value[1:].isdigit():  # "--opt -1" is read as a negative number too
        assert parse_error([*MINIMAL[sub], option, value], capsys)[-1] == lines[-1]


@pytest.mark.parametrize(("sub", "option", "rule"), [
    *[(sub, option, f"an integer >= {low} and <= {high}") for sub, option, low, high in INTEGERS],
    *[(sub, option, "a number > 0 and <= 1e+09") for sub, option in SECONDS]])
def test_a_number_beyond_any_float_is_refused_like_any_out_of_range_one(
        sub: str, option: str, rule: str, capsys: pytest.CaptureFixture[str]) -> None:
    """400 digits: an int Python holds but no float does (it used to escape as an OverflowError traceback)."""
    huge = "1" + "0" * 400
    lines = parse_error([*MINIMAL[sub], f"{option}={huge}"], capsys)
    assert lines == [f"nas-meta {sub}: error: argument {option}: {huge[:37] + '...'!r} is not allowed: expected {rule}."]


def test_minus_inf_after_a_space_is_refused_with_the_range(capsys: pytest.CaptureFixture[str]) -> None:
    lines = parse_error(["search", "s.yaml", "--timeout", "-inf"], capsys)
    assert lines[-1] == ("nas-meta search: error: argument --timeout: '-inf' is not allowed: expected a number > 0 and "
                         "<= 1e+09.")


def test_a_huge_number_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    lines = parse_error(["evaluate", "runs/x", "--episodes", "9" * 5000], capsys)
    assert len(lines[-1]) < 300 and "9" * 100 not in lines[-1]


@pytest.mark.parametrize("sub", list(MINIMAL))
def test_quiet_and_verbose_are_accepted_after_the_subcommand(sub: str) -> None:
    parser = build_parser()
    assert parser.parse_args([*MINIMAL[sub], "-q"]).quiet is True
    assert parser.parse_args([*MINIMAL[sub], "-v", "-v"]).verbose == 2
    assert parser.parse_args([*MINIMAL[sub], "--quiet", "--verbose"]).verbose == 1
    assert parser.parse_args(["-q", *MINIMAL[sub]]).quiet is True
    plain = parser.parse_args(MINIMAL[sub])
    assert plain.quiet is False and plain.verbose == 0


def _parsers() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        found.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk((*path, name), sub)

    walk((), build_parser())
    return found


@pytest.mark.parametrize("path", [p for p, _ in _parsers()], ids=lambda p: " ".join(p) or "nas-meta")
def test_every_help_ends_with_an_example_that_parses(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*path, "--help"])
    assert info.value.code == 0
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[-2] == "example:"
    example = shlex.split(lines[-1])
    assert example[0] == "nas-meta" and example[1:1 + len(path)] == list(path)
    build_parser().parse_args(example[1:])  # the example is a valid command line


def _options() -> list[Any]:
    cases = []
    for path, parser in _parsers():
        for action in parser._actions:
            if (not action.option_strings or action.help == argparse.SUPPRESS or action.required
                    or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
                continue  # positional arguments, hidden and required options, argparse's own -h and --version
            cases.append(pytest.param(path, action.option_strings[-1],
                                      id=f"{' '.join(path) or 'nas-meta'} {action.option_strings[-1]}"))
    return cases


@pytest.mark.parametrize(("path", "option"), _options())
def test_every_option_help_states_its_default(path: tuple[str, ...], option: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    parser = dict(_parsers())[path]
    action = next(a for a in parser._actions if option in a.option_strings)
    assert action.help and re.search(r"\(default: [^()]+\)", action.help), (option, action.help)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*path, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert " ".join(action.help.split()) in shown  # the text read is the text shown


# -- regression: a reader that goes away (`nas-meta studies | head -1`) ends the command quietly ---------------------

@pytest.mark.slow  # fresh interpreters importing torch and Optuna
def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NAS_META_STORAGE"}
    proc = subprocess.Popen([sys.executable, "-m", "nas_meta", "studies"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141  # 128 + SIGPIPE, as a shell pipeline's writer ends
    assert stderr == ""
    shell = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -m nas_meta studies 2>err.txt | head -1"],
                           capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert shell.returncode == 0 and shell.stdout == "shipped studies (nas-meta search NAME):\n"
    assert (tmp_path / "err.txt").read_text() == ""  # no traceback, whether or not the pipe broke


def test_a_signal_a_command_never_polled_for_still_ends_with_its_status(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM during a command with no safe point of its own (it finished first): the exit status is 143 and the
    message says so, not 0 as if nothing had been asked."""
    import signal

    import nas_meta.cli as cli_module
    from nas_meta import runtime
    from nas_meta.errors import Terminated

    monkeypatch.setattr(runtime._Interrupts, "received", None)
    monkeypatch.setattr(runtime._Interrupts, "deferred", False)

    def studies_then_sigterm(args: object) -> int:
        runtime._Interrupts.received = Terminated()  # as _on_signal records it while signals are deferred
        return 0

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}  # main installs its own handlers
    monkeypatch.setattr(cli_module, "_studies", studies_then_sigterm)
    try:
        assert cli_module.main(["studies"]) == 143
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert capsys.readouterr().err.strip().endswith("nas-meta: terminated (SIGTERM)")
