"""The federator's configuration: a training plan plus how to serve it.

YAML layout: the :class:`~cyber0.common.plan.TrainingPlan` fields at the top level (``seed``,
``zo: {nu, local_steps, ...}``, ``model``, ``dataset``, ``partition``, ``alpha``, ``n_clients``,
``f``, ``aggregator``, ``rounds``, ``loss``) and a ``federator:`` section with the
:class:`FederatorSettings` fields. Unknown keys are an error naming the key. Command-line flags
override file values (see :mod:`cyber0.server.cli`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from cyber0 import wire
from cyber0.common import tcpinfo
from cyber0.common.aggregators import Aggregator, get_aggregator
from cyber0.common.config import ConfigError, from_mapping, load_yaml
from cyber0.common.datasets import check_dataset_name
from cyber0.common.models import check_model_name
from cyber0.common.plan import TrainingPlan

FLOOR_RECEIVE_BYTES = 1024
"""Receive limit floor: bounds Join, Hello, Report and GetAggregates requests (ids ≤ 128, tokens
≤ 256, digests ≤ 128 characters, each message well under 1 KiB)."""

UPDATE_FRAMING_BYTES = 64
"""Allowance above 4·m bytes for an Update: oneof tag and lengths, round number (≤ 18 bytes)."""

MAX_GRPC_SECONDS = 2_147_483
"""Longest duration a setting given to gRPC in int32 milliseconds may have (2^31 − 1 ms)."""

MAX_UINT32 = 2**32 - 1
"""Largest value of the Plan's uint32 fields on the wire."""

MAX_SCALARS_PER_ROUND = (2**31 - 1 - UPDATE_FRAMING_BYTES) // 4
"""Largest m whose receive limit, 4·m + 64 bytes, fits gRPC's int32 option."""


def max_receive_bytes(plan: TrainingPlan) -> int:
    """The server's ``grpc.max_receive_message_length``: max(1024, 4·m + 64), m = scalars a round.

    A message above it is refused by gRPC itself (RESOURCE_EXHAUSTED) before it is parsed.
    """
    return max(FLOOR_RECEIVE_BYTES, 4 * plan.zo.scalars_per_round + UPDATE_FRAMING_BYTES)


def read_id_list(path: str) -> tuple[str, ...]:
    """Client ids from a file, one a line, in order; blank lines and ``#`` comments ignored.
    Raises :class:`ConfigError` when the file cannot be read."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"federator.enrolment_file: cannot read {path}: {exc}") from exc
    ids = (line.split("#", 1)[0].strip() for line in lines)
    return tuple(i for i in ids if i)


@dataclass(frozen=True)
class FederatorSettings:
    """How the federator serves a plan.

    ``round_timeout``: seconds a round stays open for stragglers once opened. ``quorum``: updates
    needed to close a round at its deadline (default n − f); a round whose deadline passes with
    fewer stays open until the quorum is reached. ``enrolment``: the training client ids, shard
    index = position (empty: the first n distinct ids to join, in join order). ``linger``: at most
    this many seconds the federator keeps serving after the last round, until every stream has
    closed, so that clients can fetch the last aggregate and report. ``hello_timeout``: seconds
    a new stream has to send its Hello (and a new connection to finish its TLS/HTTP/2 handshake).

    Security (see docs/security.md): ``tls_cert``/``tls_key`` serve TLS; ``tls_client_ca``
    makes it mutual (clients must present a certificate from that CA, and their id is the one in
    it); ``tls_crl``: the CA's revocation list, re-read when it changes. ``tokens``: a file of
    ``ID SHA256HEX`` lines; each client must present its token. ``insecure``: allow plaintext on
    an address other than loopback (refused otherwise). ``keepalive``: seconds between HTTP/2
    pings on each connection; a peer that does not answer within ``keepalive / 2`` more is
    dropped and its stream closed, so a client whose network died can come back.

    ``wire_metrics``: add to each round's ``metrics`` line the TCP payload bytes the client
    connections carried since the previous round, from the kernel's counters (Linux;
    :mod:`cyber0.common.tcpinfo`), in all and by the client that authenticated on each
    connection (:mod:`cyber0.server.attribution`).
    """

    host: str = "127.0.0.1"
    port: int = 50051
    round_timeout: float = 30.0
    quorum: int | None = None
    log_db: str | None = None
    metrics: str | None = None
    linger: float = 30.0
    hello_timeout: float = 10.0
    enrolment: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tls_crl: str | None = None
    tokens: str | None = None
    insecure: bool = False
    keepalive: float = 20.0
    wire_metrics: bool = False

    def __post_init__(self) -> None:
        tls = self.tls_cert is not None
        checks = [
            ("port", 0 <= self.port <= 65535, f"must be in [0, 65535]; got {self.port}"),
            ("round_timeout", self.round_timeout > 0, f"must be > 0; got {self.round_timeout}"),
            ("quorum", self.quorum is None or self.quorum >= 1, f"must be >= 1; got {self.quorum}"),
            ("linger", self.linger >= 0, f"must be >= 0; got {self.linger}"),
            (
                "hello_timeout",
                self.hello_timeout >= 0.001,
                f"must be >= 0.001 seconds (gRPC's handshake takes whole milliseconds); "
                f"got {self.hello_timeout}",
            ),
            (
                "hello_timeout",
                self.hello_timeout <= MAX_GRPC_SECONDS,
                f"must be <= {MAX_GRPC_SECONDS} seconds (gRPC's int32 milliseconds); "
                f"got {self.hello_timeout}",
            ),
            ("log_db", self.log_db != "", "must name a file (omit it for a log in memory)"),
            ("metrics", self.metrics != "", "must name a file (omit it for no metrics)"),
            (
                "enrolment",
                len(set(self.enrolment)) == len(self.enrolment),
                "client ids must be distinct",
            ),
            ("tls_key", (self.tls_key is not None) == tls, "tls_cert and tls_key go together"),
            ("tls_client_ca", tls or self.tls_client_ca is None, "needs tls_cert and tls_key"),
            (
                "tls_crl",
                self.tls_crl is None or self.tls_client_ca is not None,
                "needs tls_client_ca",
            ),
            ("keepalive", self.keepalive >= 1.0, f"must be >= 1 second; got {self.keepalive}"),
            (
                "keepalive",
                self.keepalive <= MAX_GRPC_SECONDS,
                f"must be <= {MAX_GRPC_SECONDS} seconds (gRPC's int32 milliseconds); "
                f"got {self.keepalive}",
            ),
            (
                "wire_metrics",
                not self.wire_metrics or self.metrics is not None,
                "needs metrics (the file its counts go to)",
            ),
            (
                "wire_metrics",
                not self.wire_metrics or tcpinfo.available(),
                "needs Linux (the kernel's TCP_INFO counters and /proc/self/fd)",
            ),
            (
                "host",
                tls or self.insecure or wire.is_loopback(self.host),
                f"{self.host} is not a loopback address: serve it with TLS (tls_cert, tls_key) "
                "or, knowingly, with insecure: true",
            ),
        ]
        for name, ok, message in checks:
            if not ok:
                raise ConfigError(f"federator.{name}: {message}")
        for client_id in self.enrolment:
            if not wire.CLIENT_ID_PATTERN.fullmatch(client_id):
                raise ConfigError(
                    f"federator.enrolment: {client_id!r} is not 1..128 characters of [A-Za-z0-9._-]"
                )


@dataclass(frozen=True)
class FederatorConfig:
    """A validated plan and its settings: the plan's integers fit the wire, the model and
    dataset names are checked (no data or weights are read), ``quorum`` is resolved and checked
    against the rule."""

    plan: TrainingPlan
    settings: FederatorSettings

    def __post_init__(self) -> None:
        plan = self.plan
        self._check_wire_sizes()
        try:
            check_model_name(plan.model)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from exc
        try:
            check_dataset_name(plan.dataset, plan.model)
        except ValueError as exc:
            raise ConfigError(f"dataset: {exc}") from exc
        n = plan.n_clients
        if not 1 <= self.quorum <= n:
            raise ConfigError(f"federator.quorum: must be in [1, n_clients={n}]; got {self.quorum}")
        if self.settings.enrolment and len(self.settings.enrolment) != n:
            raise ConfigError(
                f"federator.enrolment: must list n_clients={n} ids; "
                f"got {len(self.settings.enrolment)}"
            )
        self.aggregator()

    def _check_wire_sizes(self) -> None:
        """The plan's integers fit the wire's uint32 fields, and an update fits gRPC's int32
        receive limit (checked first: the rule's probe allocates quorum × m floats)."""
        plan, zo = self.plan, self.plan.zo
        sizes = {
            "rounds": plan.rounds,
            "n_clients": plan.n_clients,
            "f": plan.f,
            "zo.nu": zo.nu,
            "zo.local_steps": zo.local_steps,
            "zo.batch_size": zo.batch_size,
        }
        for name, value in sizes.items():
            if value > MAX_UINT32:
                raise ConfigError(
                    f"{name}: must be <= {MAX_UINT32} (uint32 on the wire); got {value}"
                )
        m = zo.scalars_per_round
        if m > MAX_SCALARS_PER_ROUND:
            raise ConfigError(
                f"zo.nu: an update of m={m} scalars (variant={zo.variant}, nu={zo.nu}, "
                f"local_steps={zo.local_steps}) exceeds gRPC's 2 GiB message limit; "
                f"m must be <= {MAX_SCALARS_PER_ROUND}"
            )

    @property
    def quorum(self) -> int:
        """Updates needed to close a round at its deadline (n − f unless configured)."""
        q = self.settings.quorum
        return self.plan.n_clients - self.plan.f if q is None else q

    def aggregator(self) -> Aggregator:
        """The plan's rule with its declared f, checked to accept ``quorum`` rows."""
        plan = self.plan
        try:
            rule = get_aggregator(plan.aggregator, f=plan.f)
            probe = torch.randn(
                self.quorum,
                plan.zo.scalars_per_round,
                generator=torch.Generator().manual_seed(0),
            )
            rule(probe)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"aggregator: {plan.aggregator!r} with f={plan.f} cannot aggregate "
                f"quorum={self.quorum} updates: {exc}"
            ) from exc
        return rule


_PLAN_KEYS = {f.name for f in fields(TrainingPlan)}


def build_config(
    data: Any,
    plan_overrides: Mapping[str, Any] | None = None,
    settings_overrides: Mapping[str, Any] | None = None,
) -> FederatorConfig:
    """Validate a parsed YAML mapping (may be None) with overrides applied on top.

    ``plan_overrides`` may hold a nested ``zo`` mapping; a missing ``seed`` defaults to 0.
    Raises :class:`ConfigError` naming the offending key.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping; got {data!r}")
    known = sorted([*_PLAN_KEYS, "federator"])
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown key (known keys: {', '.join(known)})")
    plan_data = {k: v for k, v in data.items() if k != "federator"}
    for key, value in (plan_overrides or {}).items():
        if key == "zo":
            zo = plan_data.get("zo") or {}
            if not isinstance(zo, Mapping):
                raise ConfigError(f"zo: expected a mapping; got {zo!r}")
            plan_data["zo"] = {**zo, **value}
        else:
            plan_data[key] = value
    plan_data.setdefault("seed", 0)
    settings_data = data.get("federator") or {}
    if not isinstance(settings_data, Mapping):
        raise ConfigError(f"federator: expected a mapping; got {settings_data!r}")
    overrides = dict(settings_overrides or {})
    if "enrolment_file" in overrides:  # a flag's file replaces the YAML's list
        settings_data = {k: v for k, v in settings_data.items() if k != "enrolment"}
    settings_data = {**settings_data, **overrides}
    enrolment_file = settings_data.pop("enrolment_file", None)
    if enrolment_file is not None:
        if settings_data.get("enrolment"):
            raise ConfigError("federator.enrolment_file: give either enrolment or enrolment_file")
        if not isinstance(enrolment_file, str):
            raise ConfigError(f"federator.enrolment_file: expected a path; got {enrolment_file!r}")
        settings_data["enrolment"] = list(read_id_list(enrolment_file))
    plan = from_mapping(TrainingPlan, plan_data)
    settings = from_mapping(FederatorSettings, settings_data, "federator")
    return FederatorConfig(plan, settings)


def load_config(
    path: str | None,
    plan_overrides: Mapping[str, Any] | None = None,
    settings_overrides: Mapping[str, Any] | None = None,
) -> FederatorConfig:
    """:func:`build_config` on the YAML file at ``path`` (or on nothing when ``path`` is None)."""
    data = load_yaml(path) if path is not None else None
    return build_config(data, plan_overrides, settings_overrides)
