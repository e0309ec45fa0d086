"""Suite-wide hooks: with ``CYBER0_FORBID_SKIPS=1`` (set by ``.ci/run``) a skip fails the run;
property-based tests draw the same examples on every run.

Some modules skip themselves where an optional part is missing (transformers, the sentences,
a C++ toolchain for the native generator). On a developer's machine that is a convenience; in
CI, where the bootstrap installs every part, a skip means a broken install that would otherwise
pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
from types import ModuleType

import pytest
from hypothesis import settings

from cyber0.common import native

pytest_plugins = ["pytester"]

# Seeds fixed: Hypothesis draws its examples from a fixed seed and keeps no database of earlier
# failures, so a run on a fresh clone tests what the last run tested (a new counter-example is
# found by changing the code or the strategy, not by chance in CI).
settings.register_profile("cyber0", derandomize=True, database=None)
settings.load_profile("cyber0")

FORBID_SKIPS = "CYBER0_FORBID_SKIPS"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Turn a passing run with skips into a failing one when :data:`FORBID_SKIPS` is ``1``."""
    if os.environ.get(FORBID_SKIPS) != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if not skipped:
        return
    for report in skipped:
        reporter.write_line(f"{FORBID_SKIPS}=1: skipped {report.nodeid}: {report.longrepr}")
    if exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def native_kernel() -> ModuleType:
    """The native kernel; a skip only where this machine cannot build one (no C++ compiler or
    ninja), never where a built kernel disagrees."""
    if shutil.which("c++") is None or shutil.which("ninja") is None:
        pytest.skip("no C++ compiler or ninja to build the native generator")
    kernel = native.kernel()
    assert kernel is not None, "the native generator was built but disagrees with the eager ops"
    return kernel
