"""The Compose stack's files agree: every knob docker-compose.yml reads is listed in ``.env``
and in ``docker/text.env`` (which replaces ``.env`` entirely, so a knob missing there would
silently take the compose file's default), and neither lists a knob the compose file ignores."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest

from cyber0.common.config import ConfigError
from cyber0.server.config import build_config

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


@pytest.mark.parametrize(
    ("env_file", "loss"), [(".env", "cross_entropy"), ("docker/text.env", "balanced_cross_entropy")]
)
def test_stack_plan_from_each_env_file_is_a_valid_federator_config(
    env_file: str, loss: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker/stack.py turns each env file's knobs into the federator's YAML, which the
    federator accepts as is: the plan it trains (LOSS included) is the one the file names."""
    monkeypatch.syspath_prepend(str(ROOT / "docker"))
    for line in (ROOT / env_file).read_text().splitlines():
        if (match := re.match(r"^([A-Z0-9_]+)=(.*)$", line)) is not None:
            monkeypatch.setenv(match.group(1), match.group(2))
    stack = importlib.import_module("stack")
    config = build_config(stack.plan_from_env())
    assert config.plan.loss == loss
    assert config.plan.model == os.environ["MODEL"]
    assert config.plan.zo.nu == int(os.environ["NU"])
    monkeypatch.setenv("LOSS", "hinge")
    with pytest.raises(ConfigError, match="loss"):
        build_config(stack.plan_from_env())


def test_compose_e2e_pins_every_knob_of_its_mnist_stages() -> None:
    """tests/docker/compose-e2e.sh runs the MNIST stages without an env file: every knob the
    compose file reads is given on its command line, so a developer's .env never changes CI's
    plan (the text stages read docker/text.env, which lists every knob)."""
    script = (ROOT / "tests" / "docker" / "compose-e2e.sh").read_text()
    mnist = script[script.index("  mnist | local)") :]
    mnist = mnist[: mnist.index("    ;;")]
    compose_env = script[script.index("compose_env=(") :]
    compose_env = compose_env[: compose_env.index("\n)\n")]
    given = "\n".join(re.findall(r"plan_env\+?=\((.*?)\)", mnist, re.DOTALL)) + compose_env
    pinned = set(re.findall(r"""(?:^|[\s("])([A-Z][A-Z0-9_]*)=""", given, re.MULTILINE))
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))
    assert {"LOSS", "MODEL", "DATASET", "FEDERATOR_LOG_LEVEL"} <= used
    assert sorted(used - pinned) == []
