"""The client tools' command lines: options and plan files refused with the reason (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyber0.client import demo


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("federator: null\n", "federator must be a mapping of fields; got None"),
        ("zo: 5\n", "zo must be a mapping of fields; got 5"),
        ("zo: null\nrounds: 3\n", "zo must be a mapping of fields; got None"),
    ],
)
def test_the_demo_refuses_a_plan_section_that_is_not_a_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """Before anything starts: no traceback, no work folder."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(content)
    workdir = tmp_path / "w"
    assert demo.main(["--plan", str(plan), "--nu", "4", "--workdir", str(workdir)]) == 2
    assert f"cyber0-demo: --plan {plan}: {message}" in capsys.readouterr().err
    assert not workdir.exists()
