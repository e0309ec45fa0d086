"""The Compose stack's files agree: every knob docker-compose.yml reads is listed in ``.env``
and in ``docker/text.env`` (which replaces ``.env`` entirely, so a knob missing there would
silently take the compose file's default), and neither lists a knob the compose file ignores."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Read by Compose itself, not by docker-compose.yml.
COMPOSE_OWN = {"COMPOSE_PROJECT_NAME"}


def knobs(path: Path) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([A-Z0-9_]+)=", path.read_text(), re.MULTILINE)}


@pytest.mark.parametrize("env_file", [".env", "docker/text.env"])
def test_env_files_list_every_knob_of_the_compose_file(env_file: str) -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))
    assert {"DATA_PATH", "CLIENT_DATA", "DATASET", "TLS"} <= used
    listed = knobs(ROOT / env_file)
    assert sorted(used - listed) == []
    assert sorted(listed - used - COMPOSE_OWN) == []
