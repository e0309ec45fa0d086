"""Conversions between protocol v1 messages and engine objects, shared by federator and client.

The only place that maps :class:`~cyber0.common.plan.TrainingPlan` to and from the wire ``Plan``
and packs scalars. Scalars travel as protobuf ``float`` (IEEE-754 binary32); aggregates are kept
as little-endian float32 bytes so that the log, the stream and catch-up carry identical bits.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import numpy as np

from cyber0.common.plan import PlanError, TrainingPlan, ZOSettings
from cyber0.v1 import federation_pb2 as pb

PROTOCOL_VERSION = 4
"""The version this code speaks (``JoinRequest.protocol_version``). 4: the plan names its
``loss`` (a party of version 3 would train the mean cross-entropy whatever the plan says)."""

MAX_CLIENT_ID_CHARS = 128
MAX_TOKEN_CHARS = 256
MAX_DIGEST_CHARS = 128
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
DIGEST_PATTERN = re.compile(r"[0-9a-f]{0,128}")

_VARIANTS = {"unbiased": pb.VARIANT_UNBIASED, "biased": pb.VARIANT_BIASED}
_DISTRIBUTIONS = {
    "gaussian": pb.DISTRIBUTION_GAUSSIAN,
    "rademacher": pb.DISTRIBUTION_RADEMACHER,
}
_PARTITIONS = {"iid": pb.PARTITION_IID, "dirichlet": pb.PARTITION_DIRICHLET}
_LOSSES = {
    "cross_entropy": pb.LOSS_CROSS_ENTROPY,
    "balanced_cross_entropy": pb.LOSS_BALANCED_CROSS_ENTROPY,
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface (``localhost``, 127.0.0.0/8, ``::1``): the
    only place a party may speak plaintext without saying so (``--insecure``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def target_host(target: str) -> str:
    """The host of a gRPC target ``HOST:PORT`` (``[V6]:PORT`` too)."""
    host, sep, port = target.rpartition(":")
    return host if sep and port.isdigit() else target


def _reverse(table: dict[str, int], field: str, value: int) -> str:
    for name, code in table.items():
        if code == value:
            return name
    raise PlanError(f"{field}: unknown or unspecified enum value {value}")


def plan_to_proto(plan: TrainingPlan) -> pb.Plan:
    """The wire form of ``plan`` (lossless: floats travel as double)."""
    zo = plan.zo
    return pb.Plan(
        seed=plan.seed,
        nu=zo.nu,
        local_steps=zo.local_steps,
        mu=zo.mu,
        lr=zo.lr,
        batch_size=zo.batch_size,
        variant=_VARIANTS[zo.variant],
        distribution=_DISTRIBUTIONS[zo.distribution],
        model=plan.model,
        dataset=plan.dataset,
        partition=_PARTITIONS[plan.partition],
        alpha=plan.alpha,
        n_clients=plan.n_clients,
        f=plan.f,
        aggregator=plan.aggregator,
        rounds=plan.rounds,
        loss=_LOSSES[plan.loss],
    )


def plan_from_proto(msg: pb.Plan) -> TrainingPlan:
    """The engine plan carried by ``msg``; raises :class:`PlanError` naming a bad field."""
    zo = ZOSettings(
        nu=msg.nu,
        local_steps=msg.local_steps,
        mu=msg.mu,
        lr=msg.lr,
        batch_size=msg.batch_size,
        variant=_reverse(_VARIANTS, "variant", msg.variant),  # type: ignore[arg-type]
        distribution=_reverse(_DISTRIBUTIONS, "distribution", msg.distribution),  # type: ignore[arg-type]
    )
    return TrainingPlan(
        seed=msg.seed,
        zo=zo,
        model=msg.model,
        dataset=msg.dataset,
        partition=_reverse(_PARTITIONS, "partition", msg.partition),  # type: ignore[arg-type]
        alpha=msg.alpha,
        n_clients=msg.n_clients,
        f=msg.f,
        aggregator=msg.aggregator,
        rounds=msg.rounds,
        loss=_reverse(_LOSSES, "loss", msg.loss),  # type: ignore[arg-type]
    )


def float32_bytes(values: Sequence[float] | np.ndarray) -> bytes:
    """``values`` as little-endian float32 bytes (the log's and the aggregates' canonical form)."""
    return np.asarray(values, dtype="<f4").tobytes()


def floats_from_bytes(data: bytes) -> list[float]:
    """The Python floats (each exactly a float32) encoded by :func:`float32_bytes`."""
    values: list[float] = np.frombuffer(data, dtype="<f4").tolist()
    return values


def update_message(round: int, values: Sequence[float] | np.ndarray) -> pb.ClientMessage:
    """A client's Update for ``round``."""
    return pb.ClientMessage(update=pb.Update(round=round, values=_as_list(values)))


def aggregate(round: int, data: bytes, next_open: bool = False) -> pb.Aggregate:
    """The Aggregate of ``round`` from its float32 bytes (``next_open``: it also opens round
    ``round + 1``, on the Train stream only)."""
    return pb.Aggregate(round=round, values=floats_from_bytes(data), next_open=next_open)


def _as_list(values: Sequence[float] | np.ndarray) -> list[float]:
    tolist = getattr(values, "tolist", None)  # numpy arrays and torch tensors
    return list(tolist()) if tolist is not None else list(values)
