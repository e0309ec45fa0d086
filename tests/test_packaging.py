"""The distribution as pip builds it (``scripts/build-wheel.sh``, which the Docker wheelhouse
uses): one top-level package, ``cyber0``, holding exactly the modules of the source folders it
maps, and the version every console script reports."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cyber0
from cyber0.wire import PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parent.parent
#: Source folder → its import path in the wheel (pyproject's ``package-dir``).
FOLDERS = {
    "proto/cyber0": "cyber0",
    "common": "cyber0/common",
    "server": "cyber0/server",
    "client": "cyber0/client",
}
SHIPPED = {".py", ".pyi", ".typed", ".proto", ".cpp"}
#: Console scripts and whether they speak the wire protocol.
COMMANDS = {
    "cyber0-federator": True,
    "cyber0-client": True,
    "cyber0-demo": True,
    "cyber0-certs": False,
    "cyber0-sim": False,
    "cyber0-evaluate": False,
    "cyber0-export": False,
}


def _sources() -> set[str]:
    """The files the wheel must hold, at their paths in the wheel."""
    found = set()
    for folder, prefix in FOLDERS.items():
        base = ROOT / folder
        for path in base.rglob("*"):
            if path.is_file() and path.suffix in SHIPPED and "__pycache__" not in path.parts:
                found.add(f"{prefix}/{path.relative_to(base).as_posix()}")
    return found


@pytest.mark.slow
def test_the_wheel_holds_the_source_folders_under_one_package(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-wheel.sh"), str(tmp_path), "--no-build-isolation"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    (wheel,) = tmp_path.glob("cyber0-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"cyber0-{cyber0.__version__}.dist-info"
        assert archive.read(f"{info}/top_level.txt").decode().split() == ["cyber0"]
    assert {name.split("/", 1)[0] for name in names} == {"cyber0", info}
    # Every module of the sources, and nothing else: no stale module of an earlier build.
    assert {name for name in names if name.startswith("cyber0/")} == _sources()
    assert "cyber0/common/aggregators.py" in names and "cyber0/v1/federation.proto" in names


@pytest.mark.parametrize(("command", "speaks_protocol"), COMMANDS.items())
def test_every_command_reports_the_distribution_version(
    command: str, speaks_protocol: bool
) -> None:
    script = Path(sys.executable).with_name(command)
    done = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    version = importlib.metadata.version("cyber0")
    assert cyber0.__version__ == version
    expected = f"{command} {version}"
    if speaks_protocol:
        expected += f" (protocol {PROTOCOL_VERSION})"
    assert done.stdout.strip() == expected
