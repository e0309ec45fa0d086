"""CYBER-0: Byzantine-resilient zero-order federated learning as a networked service.

Subpackages: ``cyber0.common`` (the engine), ``cyber0.v1`` (generated protocol code),
``cyber0.server`` (the federator) and ``cyber0.client`` (the client daemon).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__version__ = "0.1.0"


def add_version_option(parser: argparse.ArgumentParser, protocol: int | None = None) -> None:
    """``--version`` on a command: ``PROG 0.1.0``, and ``(protocol N)`` for a command that speaks
    the wire protocol, whose version every party must share (``docs/protocol.md``)."""
    spoken = "" if protocol is None else f" (protocol {protocol})"
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}{spoken}")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""What ``--log-level`` accepts, in any case."""


def add_log_level_option(parser: argparse.ArgumentParser, default: str) -> None:
    """``--log-level``: one of :data:`LOG_LEVELS` in any case (stored upper-case); anything else
    is a usage error (exit 2) that lists them."""
    parser.add_argument(
        "--log-level",
        default=default,
        type=str.upper,
        choices=LOG_LEVELS,
        help=f"logging level on stderr ({default})",
    )
