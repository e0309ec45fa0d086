"""``cyber0-federator``: serve a training plan to the client daemons.

Prints ``cyber0-federator listening on HOST:PORT`` on stdout once it serves; exits 0 when all
rounds are done (after ``--linger`` seconds) or on SIGTERM/SIGINT, 1 if the rounds failed,
2 on a configuration, log or address error (message on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from cyber0 import add_log_level_option, add_version_option
from cyber0.common.config import ConfigError
from cyber0.common.plan import LOSSES, PlanError
from cyber0.wire import PROTOCOL_VERSION

from .app import serve
from .config import FederatorConfig, load_config
from .log import LogError

_PLAN_FLAGS = {
    "clients": "n_clients",
    "byzantine": "f",
    "aggregator": "aggregator",
    "rounds": "rounds",
    "seed": "seed",
    "loss": "loss",
}
_ZO_FLAGS = {"nu": "nu", "local_steps": "local_steps"}
_SETTINGS_FLAGS = (
    "host",
    "port",
    "round_timeout",
    "quorum",
    "log_db",
    "metrics",
    "linger",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_crl",
    "tokens",
    "keepalive",
    "enrolment_file",
    "insecure",
    "wire_metrics",
)


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag overrides the config file's value."""
    p = argparse.ArgumentParser(
        prog="cyber0-federator", description="CYBER-0 federator (gRPC, scalar-only rounds)."
    )
    add_version_option(p, PROTOCOL_VERSION)
    p.add_argument("--config", metavar="FILE.yaml", help="plan and federator settings")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind; 0 picks a free one (default 50051)")
    p.add_argument("--clients", type=int, help="expected training clients n")
    p.add_argument("--byzantine", type=int, help="declared Byzantine clients f")
    p.add_argument("--nu", type=int, help="directions per local step")
    p.add_argument("--local-steps", type=int, help="local steps K per round")
    p.add_argument("--aggregator", help="robust rule (cwtm, krum, median, ...)")
    p.add_argument("--rounds", type=int, help="number of rounds")
    p.add_argument("--seed", type=int, help="master seed (default 0)")
    p.add_argument("--loss", choices=LOSSES, help="the clients' objective (cross_entropy)")
    p.add_argument("--round-timeout", type=float, help="seconds a round waits for stragglers")
    p.add_argument("--quorum", type=int, help="updates needed to close at the deadline (n - f)")
    p.add_argument("--log-db", metavar="FILE", help="SQLite durable log (resumes from it)")
    p.add_argument("--metrics", metavar="FILE", help="per-round metrics, JSON lines")
    p.add_argument("--linger", type=float, help="seconds to keep serving after the last round")
    p.add_argument("--tls-cert", metavar="PEM", help="the federator's certificate (serve TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="the federator's private key")
    p.add_argument(
        "--tls-client-ca", metavar="PEM", help="CA of the client certificates (mutual TLS)"
    )
    p.add_argument("--tls-crl", metavar="PEM", help="the client CA's revocation list")
    p.add_argument(
        "--enrolment", dest="enrolment_file", metavar="FILE", help="training ids, one a line"
    )
    p.add_argument("--tokens", metavar="FILE", help="per-client tokens: 'ID SHA256HEX' lines")
    p.add_argument(
        "--insecure",
        action="store_const",
        const=True,
        help="allow plaintext on a non-loopback address",
    )
    p.add_argument("--keepalive", type=float, help="seconds between HTTP/2 pings (20)")
    p.add_argument(
        "--wire-metrics",
        action="store_const",
        const=True,
        help="add each round's TCP payload bytes on the client connections to --metrics, in all "
        "and by client (Linux)",
    )
    add_log_level_option(p, "INFO")
    return p


def config_from_args(args: argparse.Namespace) -> FederatorConfig:
    """The configuration named by ``args`` (file, then flags on top)."""
    given = {k: v for k, v in vars(args).items() if v is not None}
    plan: dict[str, Any] = {key: given[flag] for flag, key in _PLAN_FLAGS.items() if flag in given}
    zo = {key: given[flag] for flag, key in _ZO_FLAGS.items() if flag in given}
    if zo:
        plan["zo"] = zo
    settings = {key: given[key] for key in _SETTINGS_FLAGS if key in given}
    return load_config(args.config, plan, settings)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # uvloop is not available on Windows
        return asyncio.run(coro)
    code: int = uvloop.run(coro)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cyber0-federator``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        config = config_from_args(args)
    except (ConfigError, PlanError) as exc:
        print(f"cyber0-federator: error: {exc}", file=sys.stderr)
        return 2

    def ready(address: str) -> None:
        print(f"cyber0-federator listening on {address}", flush=True)

    try:
        return _run(serve(config, ready))
    except (ConfigError, LogError, OSError) as exc:
        print(f"cyber0-federator: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
