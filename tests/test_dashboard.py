"""optuna-dashboard on a study made by a real tiny search, loaded in headless Chromium (slow)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nas_meta.api import run_search
from tests.helpers_study import make_study

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def page_text(url: str, profile: Path) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is needed (installed by .ci/run)"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    dom = re.sub(r"<style.*?</style>", " ", dom, flags=re.DOTALL)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def start_dashboard(storage: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "nas_meta.cli", "dashboard", "--storage", storage, "--port",
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/", timeout=2)
            return server, port
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "the dashboard did not start"
            time.sleep(0.5)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dashboard_shows_the_study_and_its_trials_and_never_writes(tmp_path: Path, omniglot: Path) -> None:
    study = make_study(tmp_path, name="dashtiny", n_trials=3)
    runs = tmp_path / "runs"
    storage = f"journal:{runs / 'dashtiny.journal'}"
    run_search(study, storage=storage, device="cpu", data=omniglot)
    before = folder_bytes(runs)
    for start in range(2):  # started twice, pages loaded each time: the storage stays byte for byte
        server, port = start_dashboard(storage)
        try:
            studies = page_text(f"http://127.0.0.1:{port}/dashboard/", tmp_path / f"p1-{start}")
            assert "dashtiny" in studies
            trials = page_text(f"http://127.0.0.1:{port}/dashboard/studies/0/trials", tmp_path / f"p2-{start}")
            assert "3 Trials" in trials
            for number in range(3):
                assert f"Trial {number}" in trials
            assert "baseline maml" in trials and "dev_accuracy" in trials
        finally:
            server.terminate()
            out, _ = server.communicate(timeout=30)
        assert "Warning" not in out and "Traceback" not in out, out
        assert folder_bytes(runs) == before


def test_dashboard_refuses_a_missing_journal_without_creating_it(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "nas_meta.cli", "dashboard", "--storage",
                           f"journal:{tmp_path / 'none.journal'}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"nas-meta: error: cannot open storage journal:{tmp_path / 'none.journal'}: no such journal file."
    assert list(tmp_path.iterdir()) == []


def test_dashboard_binds_to_localhost_by_default() -> None:
    from nas_meta.cli import build_parser

    args = build_parser().parse_args(["dashboard", "--storage", "journal:x.journal"])
    assert args.host == "127.0.0.1" and args.port == 8080
