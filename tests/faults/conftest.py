"""The fault suite's report: each test records what it tried per command; the summary prints one table.

``fault_report(command, **counts)`` adds a row (e.g. ``bad_named=9, good_processed=6`` for a mixed folder, or
``killed=1, finished_before_kill=5, redone=0, total=60`` for a kill-and-rerun); it is recorded only when the
test passes, so the table lists what was verified.
"""

from __future__ import annotations

import pytest

_ROWS = pytest.StashKey[list]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROWS] = []


@pytest.fixture
def fault_report(request: pytest.FixtureRequest):
    pending: list[tuple[str, str, dict[str, int]]] = []

    def record(command: str, **counts: int) -> None:
        pending.append((command, request.node.name, counts))

    yield record
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed:
        request.config.stash[_ROWS].extend(pending)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    terminalreporter.section("fault suite")
    for command, test, counts in sorted(rows):
        what = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
        terminalreporter.write_line(f"{command:>10}: {what}  ({test})")
    lost = sum(c.get("lost", 0) + c.get("redone", 0) for _, _, c in rows)
    terminalreporter.write_line(f"{len(rows)} checks passed; files lost or redone: {lost}")
