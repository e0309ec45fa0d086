"""The suite's skip guard: a skip fails the run only where CI asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

SKIPPING = """
import pytest

def test_runs():
    assert True

def test_needs_a_missing_part():
    pytest.skip("a part this machine lacks")
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A throwaway suite with the project's conftest, one passing and one skipping test."""
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_suite=SKIPPING)
    return pytester


def test_a_skip_passes_by_default(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CYBER0_FORBID_SKIPS", raising=False)
    result = suite.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)


def test_a_skip_fails_the_run_when_forbidden(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CYBER0_FORBID_SKIPS", "1")
    result = suite.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped test_suite.py::test_needs_a_missing_part*"])


def test_a_run_without_skips_still_passes_when_forbidden(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CYBER0_FORBID_SKIPS", "1")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_suite="def test_runs():\n    assert True\n")
    assert pytester.runpytest_subprocess().ret == pytest.ExitCode.OK
