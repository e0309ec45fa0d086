"""The committed generated code matches ``federation.proto``, and the schema can carry nothing
but scalars: no bytes field anywhere, every repeated scalar is a float, strings are few."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from cyber0 import wire
from cyber0.common.plan import PlanError, TrainingPlan, ZOSettings
from cyber0.v1 import federation_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("federation_pb2.py", "federation_pb2.pyi", "federation_pb2_grpc.py")


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    for name in GENERATED:
        fresh = (tmp_path / "cyber0" / "v1" / name).read_text()
        committed = (ROOT / "proto" / "cyber0" / "v1" / name).read_text()
        assert fresh == committed, f"proto/cyber0/v1/{name} is stale: run scripts/gen_proto.sh"


def _messages() -> list[Descriptor]:
    return list(pb.DESCRIPTOR.message_types_by_name.values())


STRINGS = {
    ("Credentials", "client_id"),
    ("Credentials", "token"),
    ("Report", "digest"),
    ("JoinResponse", "model_digest"),
    ("Plan", "model"),
    ("Plan", "dataset"),
    ("Plan", "aggregator"),
}


@pytest.mark.parametrize("message", _messages(), ids=lambda d: d.name)
def test_no_field_can_carry_a_model(message: Descriptor) -> None:
    for field in message.fields:
        assert field.type != FieldDescriptor.TYPE_BYTES, f"{message.name}.{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            assert (message.name, field.name) in STRINGS
        if field.is_repeated:
            allowed = field.type == FieldDescriptor.TYPE_FLOAT or (
                message.name,
                field.name,
            ) == ("GetAggregatesResponse", "aggregates")
            assert allowed, f"{message.name}.{field.name}"


@pytest.mark.parametrize("loss", ["cross_entropy", "balanced_cross_entropy"])
def test_plan_round_trips_exactly(loss: str) -> None:
    plan = TrainingPlan(
        seed=2**62 + 3,
        zo=ZOSettings(nu=3, local_steps=5, mu=1e-3 / 3, lr=0.1, variant="biased",
                      distribution="rademacher"),
        partition="iid",
        alpha=0.3,
        n_clients=12,
        f=3,
        aggregator="nnm+krum",
        rounds=7,
        loss=loss,  # type: ignore[arg-type]
    )  # fmt: skip
    assert wire.plan_from_proto(wire.plan_to_proto(plan)) == plan


def test_a_plan_without_its_loss_is_refused_naming_the_field() -> None:
    """An unspecified ``loss`` (a version 3 federator's plan has none) is a PlanError naming the
    field, as are the other enums'; the default plan sends LOSS_CROSS_ENTROPY."""
    msg = wire.plan_to_proto(TrainingPlan(seed=1))
    assert msg.loss == pb.LOSS_CROSS_ENTROPY
    msg.ClearField("loss")
    with pytest.raises(PlanError, match="loss: unknown or unspecified enum value 0"):
        wire.plan_from_proto(msg)


@pytest.mark.parametrize("field", ["mu", "lr", "alpha"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_plan_with_a_non_finite_rate_is_refused(field: str, value: float) -> None:
    """The proto carries any double: a federator's inf or NaN step, smoothing or α is a
    PlanError naming the field at the client, which would otherwise train on NaN."""
    msg = wire.plan_to_proto(TrainingPlan(seed=1))
    setattr(msg, field, value)
    with pytest.raises(PlanError, match=f"{field} must be finite and > 0"):
        wire.plan_from_proto(msg)


def test_update_payload_size_is_what_the_schema_implies() -> None:
    """ClientMessage{update{round, m floats}}: 1 + len(Update) + 1 bytes of oneof framing around
    Update = [1 + varint(round) if round] + 1 + varint(4m) + 4m."""
    assert wire.update_message(0, [0.5]).ByteSize() == 2 + (1 + 1 + 4)
    assert wire.update_message(5, [0.5]).ByteSize() == 2 + (2 + 1 + 1 + 4)
    assert wire.update_message(300, [0.0] * 64).ByteSize() == 3 + (3 + 1 + 2 + 256)
