"""The federator's settings and flags that used to pass validation and fail later: durations
beyond gRPC's int32 milliseconds, empty file names, plan integers beyond the wire's uint32, an
unknown log level, a metrics path that cannot be opened."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from test_federator import federation, make_config, run

from cyber0.client import cli as client_cli
from cyber0.common.config import ConfigError
from cyber0.server import cli as server_cli
from cyber0.server.cli import build_parser, config_from_args, main
from cyber0.server.config import build_config

LONGEST_GRPC_SECONDS = 2_147_483  # 2^31 - 1 milliseconds, rounded down to whole seconds
MAX_UINT32 = 2**32 - 1


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"keepalive": 3e6}, "federator.keepalive: must be <= 2147483 seconds"),
        ({"hello_timeout": 1e7}, "federator.hello_timeout: must be <= 2147483 seconds"),
        ({"hello_timeout": 1e-4}, "federator.hello_timeout: must be >= 0.001 seconds"),
        ({"log_db": ""}, "federator.log_db: must name a file"),
        ({"metrics": ""}, "federator.metrics: must name a file"),
    ],
)
def test_settings_beyond_grpc_or_empty_paths_are_refused(
    settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        make_config(**settings)


def test_the_longest_durations_grpc_takes_serve() -> None:
    config = make_config(keepalive=LONGEST_GRPC_SECONDS, hello_timeout=LONGEST_GRPC_SECONDS)

    async def main() -> None:
        async with federation(config) as fed:
            assert fed.port > 0

    run(main())


@pytest.mark.parametrize(
    ("plan", "named"),
    [
        ({"rounds": MAX_UINT32 + 1}, "rounds: must be <= 4294967295 (uint32 on the wire)"),
        ({"n_clients": MAX_UINT32 + 1}, "n_clients: must be <= 4294967295"),
        ({"zo": {"nu": MAX_UINT32 + 1}}, "zo.nu: must be <= 4294967295"),
        ({"zo": {"local_steps": MAX_UINT32 + 1}}, "zo.local_steps: must be <= 4294967295"),
        ({"zo": {"batch_size": MAX_UINT32 + 1}}, "zo.batch_size: must be <= 4294967295"),
        ({"zo": {"nu": 2**28, "local_steps": 4}}, "zo.nu: an update of m=1073741824 scalars"),
    ],
)
def test_plan_integers_beyond_the_wire_are_refused(plan: dict[str, Any], named: str) -> None:
    data = {"seed": 1, "n_clients": 4, "f": 1, "federator": {"port": 0}, **plan}
    with pytest.raises(ConfigError, match=re.escape(named)):
        build_config(data)


def test_the_largest_uint32_round_count_is_accepted() -> None:
    assert make_config(rounds=MAX_UINT32).plan.rounds == MAX_UINT32


@pytest.mark.parametrize("command", ["federator", "client"])
def test_an_unknown_log_level_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both daemons: a usage error listing the levels (the client's was a traceback), any case."""
    cli = server_cli if command == "federator" else client_cli
    argv = [] if command == "federator" else ["--id", "c0"]
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--log-level", "verbose"])
    assert exited.value.code == 2
    assert "'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'" in capsys.readouterr().err
    assert cli.build_parser().parse_args([*argv, "--log-level", "debug"]).log_level == "DEBUG"


@pytest.mark.parametrize("flag", ["--log-db", "--metrics"])
def test_an_empty_path_flag_is_refused(flag: str) -> None:
    setting = flag.removeprefix("--").replace("-", "_")
    with pytest.raises(ConfigError, match=f"federator.{setting}: must name a file"):
        config_from_args(build_parser().parse_args([flag, ""]))


@pytest.mark.parametrize("where", ["directory", "under a file"])
def test_a_metrics_path_that_cannot_be_opened_names_the_setting(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path if where == "directory" else tmp_path / "file" / "metrics.jsonl"
    assert main(["--metrics", str(path), "--port", "0"]) == 2
    assert f"federator.metrics: cannot open {path}: " in capsys.readouterr().err
