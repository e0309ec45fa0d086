"""Weights files: a saved model loads back bit for bit, and a file that does not fit is refused
with the model left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cyber0.common.models import ModelSpec, build_model, model_digest
from cyber0.common.weights import WeightsError, load_model, load_weights, save_weights


class Tied(nn.Module):
    """Two modules sharing one weight (saved once, under its first name), a bf16 parameter and
    a buffer (not saved)."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(4, 4)
        self.decode = nn.Linear(4, 4, bias=False)
        self.decode.weight = self.encode.weight
        self.scale = nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
        self.register_buffer("counter", torch.zeros(1))


def trained_logreg(seed: int) -> nn.Module:
    return build_model(ModelSpec(name="logreg", init_seed=seed))


def test_round_trip_is_bitwise_and_carries_metadata(tmp_path: Path) -> None:
    model = trained_logreg(1)
    path = tmp_path / "model.safetensors"
    digest = save_weights(model, path, {"round": "41", "model": "logreg"})
    assert digest == model_digest(model)
    assert not list(tmp_path.glob(".*.tmp"))  # written aside, then renamed
    fresh = build_model(ModelSpec(name="logreg"))
    assert model_digest(fresh) != digest
    meta = load_weights(fresh, path)
    assert model_digest(fresh) == digest
    assert meta["round"] == "41" and meta["model"] == "logreg" and meta["digest"] == digest


def test_tied_and_bf16_parameters_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tied()
    with torch.no_grad():
        model.scale.mul_(1.5)
    path = tmp_path / "tied.safetensors"
    save_weights(model, path)
    other = Tied()
    load_weights(other, path)
    assert model_digest(other) == model_digest(model)
    assert other.scale.dtype == torch.bfloat16
    assert other.decode.weight is other.encode.weight  # still tied: loaded in place
    assert torch.equal(other.decode.weight, model.encode.weight)


def test_refused_files_leave_the_model_untouched(tmp_path: Path) -> None:
    model = trained_logreg(2)
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    target = trained_logreg(3)
    before = model_digest(target)

    # Flip one byte of the last value: a valid file whose contents no longer match its digest.
    altered = tmp_path / "altered.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    altered.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="altered or damaged"):
        load_weights(target, altered)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_weights(target, garbage)
    with pytest.raises(WeightsError, match="not a readable"):
        load_weights(target, tmp_path / "missing.safetensors")

    wider = build_model(ModelSpec(name="logreg", num_classes=12))
    with pytest.raises(
        WeightsError, match=r"\(10, 784\) in the file, torch.float32 \(12, 784\) in the model"
    ):
        load_weights(wider, path)
    with pytest.raises(WeightsError, match="missing from the file"):
        load_weights(Tied(), path)
    assert model_digest(target) == before


def test_a_plain_safetensors_file_is_not_taken_for_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = trained_logreg(4)
    path = tmp_path / "plain.safetensors"
    save_file({n: p.detach() for n, p in model.named_parameters()}, path)
    with pytest.raises(WeightsError, match="format None"):
        load_weights(trained_logreg(5), path)


def test_header_is_json_with_the_documented_metadata(tmp_path: Path) -> None:
    """The file is plain safetensors: an 8-byte length, a JSON header, raw little-endian data."""
    path = tmp_path / "model.safetensors"
    digest = save_weights(trained_logreg(6), path, {"round": "9"})
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"] == {
        "round": "9",
        "format": "cyber0-weights/1",
        "digest": digest,
    }
    assert header["linear.weight"]["dtype"] == "F32"
    assert header["linear.weight"]["shape"] == [10, 784]


def test_load_model_builds_what_the_metadata_names(tmp_path: Path) -> None:
    model = trained_logreg(7)
    named = tmp_path / "named.safetensors"
    save_weights(model, named, {"model": "logreg", "num_classes": "10"})
    loaded, meta = load_model(named)
    assert model_digest(loaded) == model_digest(model) == meta["digest"]
    anonymous = tmp_path / "anonymous.safetensors"
    save_weights(model, anonymous)
    with pytest.raises(WeightsError, match="does not name the model"):
        load_model(anonymous)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--save-every", "5"], "need --save-model FILE"),
        (["--resume"], "need --save-model FILE"),
        (["--save-model", "{tmp}/m.safetensors", "--save-every", "-1"], "must be >= 0"),
        (["--save-model", "{tmp}/absent/m.safetensors"], "does not exist or is read-only"),
        (["--save-model", "{tmp}"], "is a folder"),
        (["--direction-cache", "-1"], "--direction-cache must be finite and >= 0 (MiB); got -1.0"),
        (["--direction-cache", "nan"], "--direction-cache must be finite and >= 0 (MiB); got nan"),
        (["--direction-cache", "inf"], "--direction-cache must be finite and >= 0 (MiB); got inf"),
        (["--device", "foo"], "--device foo: not a device"),
        (["--timeout", "0"], "--timeout must be > 0 seconds; got 0.0"),
        (["--timeout", "-1"], "--timeout must be > 0 seconds; got -1.0"),
        (["--timeout", "nan"], "--timeout must be > 0 seconds; got nan"),
        (["--max-backoff", "0"], "--max-backoff must be > 0 seconds; got 0.0"),
        (["--keepalive", "0.5"], "--keepalive must be >= 1 second; got 0.5"),
        (["--keepalive", "inf"], "--keepalive must be >= 1 second; got inf"),
        (["--max-retries", "-1"], "--max-retries must be >= 0; got -1"),
        (["--role", "observer", "--eval-every", "0"], "--eval-every must be >= 1; got 0"),
    ],
)
def test_client_refuses_unusable_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Exit 2 with the reason, naming the option, before connecting anywhere (the target is
    never dialled)."""
    from cyber0.client import cli

    argv = ["--target", "127.0.0.1:9", "--id", "c0", *(a.format(tmp=tmp_path) for a in args)]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_checkpoint_is_written_once_per_applied_round(tmp_path: Path) -> None:
    """The daemon's final save is skipped when the last periodic save, or the resume, already
    left the applied round in the file; a newer round is written and resumes bit for bit."""
    from cyber0.client.trainer import ZOTrainer
    from cyber0.common.plan import TrainingPlan, ZOSettings
    from cyber0.common.weights import read_metadata

    plan = TrainingPlan(seed=4, zo=ZOSettings(nu=2, batch_size=8), n_clients=4, f=1)
    path = tmp_path / "ckpt.safetensors"
    trainer = ZOTrainer(checkpoint=str(path), save_every=2)
    trainer.setup(plan, -1, "observer")
    trainer.apply_aggregate(0, [0.5, -0.25])
    assert not path.exists()
    trainer.apply_aggregate(1, [0.125, 1.0])
    assert read_metadata(path)["round"] == "1"
    assert trainer.save_checkpoint() is False
    trainer.apply_aggregate(2, [-0.75, 0.5])
    assert trainer.save_checkpoint() is True
    assert read_metadata(path)["round"] == "2"

    resumed = ZOTrainer(checkpoint=str(path), resume=True)
    resumed.setup(plan, -1, "observer")
    assert resumed.applied_round == 2 and resumed.digest() == trainer.digest()
    assert resumed.save_checkpoint() is False


def test_a_checkpoint_saved_before_the_loss_field_resumes_under_cross_entropy(
    tmp_path: Path,
) -> None:
    """A checkpoint whose plan has no ``loss`` (saved before the field existed) holds a model
    of the mean cross-entropy plan: it resumes under that plan, not under the balanced one."""
    import dataclasses

    from cyber0.client.trainer import ZOTrainer
    from cyber0.common.plan import TrainingPlan, ZOSettings, plan_json
    from cyber0.common.weights import read_metadata

    plan = TrainingPlan(seed=4, zo=ZOSettings(nu=2, batch_size=8), n_clients=4, f=1)
    path = tmp_path / "ckpt.safetensors"
    trainer = ZOTrainer(checkpoint=str(path))
    trainer.setup(plan, -1, "observer")
    trainer.apply_aggregate(0, [0.5, -0.25])
    assert trainer.save_checkpoint() is True
    saved = {k: v for k, v in read_metadata(path).items() if k not in ("format", "digest")}
    old = {k: v for k, v in json.loads(plan_json(plan)).items() if k != "loss"}
    model = load_model(path)[0]
    save_weights(model, path, {**saved, "plan": json.dumps(old)})
    resumed = ZOTrainer(checkpoint=str(path), resume=True)
    resumed.setup(plan, -1, "observer")
    assert resumed.applied_round == 0 and resumed.digest() == trainer.digest()
    balanced = ZOTrainer(checkpoint=str(path), resume=True)
    with pytest.raises(ValueError, match="another plan"):
        balanced.setup(dataclasses.replace(plan, loss="balanced_cross_entropy"), -1, "observer")


def test_a_checkpoint_records_the_chain_of_its_aggregates(tmp_path: Path) -> None:
    """The checkpoint's chain is the one anyone computes from the aggregates it applied; the
    trainer accepts that chain at resume and refuses any other, naming the file."""
    from cyber0.client.trainer import ZOTrainer
    from cyber0.common.plan import TrainingPlan, ZOSettings
    from cyber0.common.weights import CHAIN_KEY, CHAIN_START, chain_aggregate, read_metadata

    plan = TrainingPlan(seed=4, zo=ZOSettings(nu=2, batch_size=8), n_clients=4, f=1)
    path = tmp_path / "ckpt.safetensors"
    aggregates = [[0.5, -0.25], [0.125, 1.0]]
    trainer = ZOTrainer(checkpoint=str(path))
    trainer.setup(plan, -1, "observer")
    chain = CHAIN_START
    for t, values in enumerate(aggregates):
        trainer.apply_aggregate(t, values)
        chain = chain_aggregate(chain, t, values)
    trainer.save_checkpoint()
    assert read_metadata(path)[CHAIN_KEY] == chain.hex()
    assert chain != chain_aggregate(chain_aggregate(CHAIN_START, 0, [0.5, -0.25]), 1, [0.125, 0])

    resumed = ZOTrainer(checkpoint=str(path), resume=True)
    resumed.setup(plan, -1, "observer")
    assert resumed.unverified_round == 1
    with pytest.raises(ValueError, match=f"{path} holds round 1 of another run of this plan"):
        resumed.check_history(chain_aggregate(CHAIN_START, 0, [0.5, -0.25]))
    assert resumed.unverified_round == 1
    resumed.check_history(chain)
    assert resumed.unverified_round == -1


def test_a_checkpoint_without_an_aggregate_chain_is_refused(tmp_path: Path) -> None:
    """A file written before checkpoints recorded their aggregates cannot be checked against
    the federator's run: --resume refuses it, saying what to do."""
    from cyber0.client.trainer import ZOTrainer
    from cyber0.common.plan import TrainingPlan, ZOSettings
    from cyber0.common.weights import CHAIN_KEY, read_metadata

    plan = TrainingPlan(seed=4, zo=ZOSettings(nu=2, batch_size=8), n_clients=4, f=1)
    path = tmp_path / "ckpt.safetensors"
    trainer = ZOTrainer(checkpoint=str(path))
    trainer.setup(plan, -1, "observer")
    trainer.apply_aggregate(0, [0.5, -0.25])
    trainer.save_checkpoint()
    kept = ("format", "digest", CHAIN_KEY)
    old = {k: v for k, v in read_metadata(path).items() if k not in kept}
    save_weights(load_model(path)[0], path, old)
    resumed = ZOTrainer(checkpoint=str(path), resume=True)
    with pytest.raises(
        ValueError, match=r"does not record the aggregates .* start without --resume"
    ):
        resumed.setup(plan, -1, "observer")
    assert resumed.applied_round == -1
