"""The command line's progress bars: the budget that ends first, the study's total from the trials already there."""

from __future__ import annotations

import logging

import pytest

from nas_meta.config import BudgetConfig
from nas_meta.progress import RunBar, SearchBars, interactive
from nas_meta.training import DevScore, End, Step


@pytest.mark.parametrize(("budget", "iteration", "seconds", "share"), [
    (BudgetConfig(100), 25, 999.0, 25.0),  # no seconds budget: iterations only
    (BudgetConfig(100, 60.0), 10, 30.0, 50.0),  # the seconds budget is further along: it ends the run
    (BudgetConfig(100, 60.0), 80, 6.0, 80.0),  # the iteration budget is further along
    (BudgetConfig(100, 60.0), 100, 90.0, 100.0),  # never past the end
    (BudgetConfig(0), 0, 0.0, 100.0),  # nothing to train
])
def test_the_bar_shows_the_budget_that_ends_first(budget: BudgetConfig, iteration: int, seconds: float,
                                                  share: float) -> None:
    bar = RunBar(budget, enabled=False)
    assert bar.share(iteration, seconds) == pytest.approx(share)
    bar.close()


def test_steps_move_the_bar_to_the_share_spent() -> None:
    bar = RunBar(BudgetConfig(1000, 10.0), enabled=True)  # drawn on the captured stderr
    for i, seconds in enumerate((1.0, 2.0, 5.0), start=1):
        bar.step(Step(i, seconds, seconds, {"loss": 1.0}))
    assert bar.shown == pytest.approx(50.0) and bar.bar.n == pytest.approx(50.0)
    bar.close()


def test_the_search_bar_starts_at_the_trials_already_there(caplog: pytest.LogCaptureFixture) -> None:
    bars = SearchBars(BudgetConfig(10), enabled=True)  # drawn on the captured stderr
    bars.started(existing=3, total=7)
    assert (bars.bar.n, bars.bar.total) == (3, 7)
    bars.counted(5)  # worker processes: the parent polls the study
    assert bars.bar.n == 5
    bars.counted(4)  # never backwards
    assert bars.bar.n == 5
    with caplog.at_level(logging.INFO, logger="nas_meta.cli"):
        bars.record(8, Step(1, 0.1, 0.1, {}))
        bars.record(8, DevScore(1, 0.2, 0.1, 1, False, 0.5, 0.75, 0.1, None))  # type: ignore[arg-type]
        bars.record(8, End("time_budget", 1, 0.3, 0.2, "stopped at the 0.2 s time budget"))
    assert bars.trial == 8 and bars.trial_bar is not None
    assert [r.getMessage() for r in caplog.records] == [
        "trial 8 iteration 1 (0.1 s of meta-training): dev loss 0.5000, dev accuracy 0.7500 ± 0.1000",
        "trial 8: training ended (time_budget) stopped at the 0.2 s time budget"]
    bars.close()
    assert bars.trial_bar is None


def test_no_bars_without_a_terminal_or_with_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert interactive(quiet=False) is False
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert interactive(quiet=False) is True and interactive(quiet=True) is False
