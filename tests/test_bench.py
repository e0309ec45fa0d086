"""Smoke tests of the benchmark scripts (bench/wire.py, scale.py, step.py, memory.py,
sim_speed.py, report.py): tiny sizes, the output JSON's schema and basic sanity. No timing is
asserted."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml

from cyber0.common.estimator import central_differences, flat_parameters, perturbed_losses
from cyber0.common.models import loss_function
from cyber0.common.perturbation import DirectionGenerator, canonical_parameters
from cyber0.common.plan import ZOSettings
from cyber0.server.config import build_config

BENCH = Path(__file__).resolve().parent.parent / "bench"
# HTTP/2 frames (9 B header each): a PING (8 B payload) and two WINDOW_UPDATEs (4 B payload).
EDGE_BURST = (9 + 8) + 2 * (9 + 4)
FIGURE_KEYS = {"id", "label", "unit", "median", "min", "max", "runs", "target", "met", "note"}


def _module(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every script's quick mode, run concurrently (they mostly wait on process start-up)."""
    out = tmp_path_factory.mktemp("bench-results")
    commands = [
        ["wire.py", "--quick", "--tls", "off"],
        ["scale.py", "--quick", "--clients", "6"],
        ["step.py", "--quick", "--no-compiled"],
        ["memory.py", "--quick"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, str(BENCH / c[0]), *c[1:], "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for c in commands
    ]
    failures = []
    for cmd, proc in zip(commands, procs, strict=True):
        try:
            text, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            text, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"{cmd}: exit {proc.returncode}\n{text[-3000:]}")
    # After the others, not beside them: it loads MNIST and simulates 20 clients.
    sim = ["--rounds", "3", "--repeats", "1", "--batch", "8", "--threads", "1", "--out", str(out)]
    sim += ["--client-rounds", "2"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "sim_speed.py"), *sim],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        failures.append(f"sim_speed.py: exit {done.returncode}\n{done.stdout[-1500:]}")
    assert not failures, "\n".join(failures)
    yield out


def _doc(results: Path, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((results / f"{name}.json").read_text())
    assert doc["benchmark"] == name
    assert {"command", "machine", "started", "finished", "figures"} <= set(doc)
    assert doc["machine"]["cores"] >= 1
    for fig in doc["figures"]:
        assert set(fig) >= FIGURE_KEYS, fig
        assert fig["met"] in (True, False, None)
        assert (fig["met"] is None) == (fig["target"] is None or fig["median"] is None)
    return doc


# --------------------------------------------------------------------------- wire
def test_wire_counts_more_tcp_bytes_than_protobuf_and_explains_them(results: Path) -> None:
    doc = _doc(results, "wire")
    (case,) = doc["cases"]
    assert (case["nu"], case["k"], case["tls"]) == (1, 1, False)
    for client in case["per_client"]:
        for d in ("up", "down"):
            part = client[d]
            # one Update up, one Aggregate (opening the next round) down, each in a DATA frame
            assert part["grpc_messages"] == pytest.approx(1.0, abs=0.2)
            assert part["bytes"] > case["metrics_payload"][d]
            explained = sum(
                v
                for k, v in part.items()
                if k in ("protobuf", "grpc_prefix", "data_frame_headers") or k.endswith("_bytes")
            )
            assert explained == pytest.approx(part["bytes"], rel=0.1)
        assert client["setup"]["up"] > 0
    # The federator's kernel counters (--wire-metrics) see the relay's stream from its other
    # end, but cut where the federator samples them (before each broadcast), not where the
    # client applies a round. Control frames gRPC sends on its own clock (a PING and a
    # connection + stream WINDOW_UPDATE, once a loaded machine slows the reads) can fall between
    # the two cuts at either edge of the window: up to two such bursts per direction.
    a, b = case["window"]
    tolerance = 2 * EDGE_BURST / (b - a)
    for d in ("up", "down"):
        assert case["federator_wire"][d] == pytest.approx(case["per_round"][d], abs=tolerance)
    # And so does each client's share of them (wire_by_client), on that client's connection.
    for client in case["per_client"]:
        assert client["federator_wire"] == pytest.approx(client["total"], abs=2 * tolerance)
    (fo,) = doc["baselines"]
    assert fo["d"] == 7850
    assert fo["total"] >= 2 * 4 * 7850
    ids = {f["id"] for f in doc["figures"]}
    assert {"wire.nu1.k1.plain.total", "wire.fo.mnist_logreg.total"} <= ids
    assert "wire.ratio.mnist_logreg" in ids


def test_relay_frame_parser_attributes_every_byte() -> None:
    relay = _module("relay")
    wire = _module("wire")
    d = relay.Direction(tls=False, preface=True)

    def frame(kind: int, stream: int, payload: bytes) -> bytes:
        return (
            len(payload).to_bytes(3, "big") + bytes([kind, 0]) + stream.to_bytes(4, "big") + payload
        )

    msg = wire.dense_message(3, b"\x00" * 8)
    grpc_stream = b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in (msg, msg[:5]))
    data = (
        relay.PREFACE
        + frame(4, 0, b"")  # SETTINGS
        + frame(0, 1, grpc_stream)  # DATA with two gRPC messages
        + frame(8, 0, (100).to_bytes(4, "big"))  # connection WINDOW_UPDATE
        + frame(8, 1, (100).to_bytes(4, "big"))  # stream WINDOW_UPDATE
    )
    for i in range(0, len(data), 7):  # arbitrary chunking
        d.feed(data[i : i + 7], float(i))
    kinds = [k for _, k, _ in d.events]
    assert kinds == [
        "preface",
        "SETTINGS",
        "DATA",
        "grpc_message",
        "grpc_message",
        "WINDOW_UPDATE_connection",
        "WINDOW_UPDATE_stream",
    ]
    sizes = {k: n for _, k, n in d.events if k != "grpc_message"}
    assert sizes["DATA"] == 9 + len(grpc_stream)
    assert [n for _, k, n in d.events if k == "grpc_message"] == [len(msg), 5]
    assert d.total == len(data)
    total, size, _count = d.window(-1.0, float(len(data)))
    assert total == len(data) == sum(n for k, n in size.items() if k != "grpc_message")


def test_dense_message_is_the_protobuf_encoding() -> None:
    wire = _module("wire")
    from cyber0 import wire as cyber_wire

    values = [0.5, -1.25, 3.0]
    import numpy as np

    raw = np.asarray(values, dtype="<f4").tobytes()
    for round_ in (0, 5, 300):
        expected = cyber_wire.update_message(round_, values).SerializeToString()
        assert wire.dense_message(round_, raw) == expected
        assert wire.dense_message_size(round_, 3) == len(expected)


# --------------------------------------------------------------------------- scale
def test_scale_reports_the_federator_cost_per_round(results: Path) -> None:
    doc = _doc(results, "scale")
    (case,) = doc["cases"]
    assert case["n"] == 6 and case["aggregator"] == "cwtm"
    assert case["rounds_per_s"] > 0
    assert case["federator_cpu_ms_per_round"]
    assert all(v >= 0 for v in case["federator_cpu_ms_per_round"])
    assert set(case["participants"]) == {6}
    assert 0 <= case["federator_sys_fraction"] <= 1
    assert any(f["id"] == "scale.cwtm.n6.federator_cpu_ms" for f in doc["figures"])


def test_scale_system_share_stays_within_one_when_user_time_stands_still() -> None:
    scale = _module("scale")
    samples = [(0.0, 1.1, 0.3), (1.0, 1.1, 0.7), (2.0, 1.1, 0.9)]  # (wall, user, system)
    assert scale._sys_fraction(samples, 0.3, 1.7) == 1.0  # one interpolated sum gave 1 + 2e-16
    assert scale._sys_fraction([(0.0, 0.0, 0.0), (1.0, 3.0, 1.0)], 0.0, 1.0) == 0.25
    assert scale._sys_fraction(samples[:1], 0.0, 0.0) == 0.0  # nothing spent


# --------------------------------------------------------------------------- step
def test_step_reports_ratios_and_generator_throughput(results: Path, native_kernel: object) -> None:
    doc = _doc(results, "step-cpu")
    r = doc["results"]
    for path in ("batched", "inplace"):
        run = r["logreg"][path]
        assert run["parameters"] == 7850
        assert len(run["ratio"]) == len(run["forward_s"]) == len(run["zo_step_s"])
        assert all(x > 0 for x in run["ratio"])
    floor = r["logreg"]["batched"]
    assert len(floor["ratio_floor"]) == len(floor["directions_s"]) == len(floor["randn_s"])
    assert "ratio_floor" not in r["logreg"]["inplace"]
    assert len(floor["ratio_native_calls"]) == len(floor["native_calls_s"]) == len(floor["ratio"])
    assert "native_calls_s" not in r["logreg"]["inplace"]
    g = r["generator"]
    assert len(g["fill_s"]) == len(g["randn_s"]) == len(g["fill_over_randn"])
    ids = {f["id"] for f in doc["figures"]}
    assert {
        "step.cpu.logreg.batched.ratio",
        "step.cpu.logreg.batched.ratio_floor",
        "step.cpu.logreg.batched.ratio_native_calls",
        "step.cpu.generator.fill_over_randn",
    } <= ids


def test_step_agreement_check_compares_cpu_with_itself() -> None:
    import torch

    step = _module("step")
    a = step.agreement(torch.device("cpu"), 1000)
    assert a["gaussian_differing_elements"] == 0 and a["rademacher_bitwise_equal"]
    assert len(a["cases"]) == 6


# --------------------------------------------------------------------------- memory
def test_memory_measures_three_modes_in_fresh_processes(results: Path) -> None:
    doc = _doc(results, "memory-cpu")
    modes = {r["mode"] for r in doc["runs"]}
    assert modes == {"inference", "zo", "backprop_adam"}
    for r in doc["runs"]:
        assert r["peak_mib"] > 0 and r["peak_mib"] >= r["before_mib"] - 1
        assert r["trainable"] > 0
    ids = {f["id"] for f in doc["figures"]}
    assert {"memory.cpu.tiny.zo_over_inference", "memory.cpu.tiny.backprop_over_zo"} <= ids


# --------------------------------------------------------------------------- report
def test_sim_speed_times_the_simulator(results: Path) -> None:
    doc = _doc(results, "sim-speed")
    figs = {f["id"]: f for f in doc["figures"]}
    fig = figs["sim.speed.b8"]
    assert fig["median"] > 0
    assert fig["target"] is None  # the target is for 1000 rounds
    assert len(doc["runs"]["8"]["wall_seconds"]) == 1
    for nu in (1, 64):  # grouped and client-by-client rounds: same bits, or the script fails
        for way in ("grouped", "client_by_client"):
            assert len(figs[f"sim.clients.nu{nu}.{way}"]["runs"]) == 2
        assert figs[f"sim.clients.nu{nu}.speedup"]["median"] > 0


def test_report_renders_every_section_with_targets(results: Path, tmp_path: Path) -> None:
    report = _module("report")
    text = report.build(results, tmp_path / "figures", tmp_path)
    for heading in ("## Targets at a glance", "## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in text
    assert "## Simulator speed" in text
    assert "≤ 64 B" in text and ("**not met**" in text or "**met**" in text)
    assert "Command: `python bench/wire.py --quick" in text
    assert (tmp_path / "figures" / "bench-wire.png").stat().st_size > 0
    assert "![wire bytes](figures/bench-wire.png)" in text  # linked from the document's folder
    assert (tmp_path / "figures" / "bench-scale.png").stat().st_size > 0


def test_step_floor_reading_says_whose_gap_it_is() -> None:
    report = _module("step_report")

    def run(floor_us: float, randn_us: float) -> dict[str, list[float]]:
        times = {"forward_s": [100e-6], "floor_s": [floor_us * 1e-6], "randn_s": [randn_us * 1e-6]}
        return times | {"ratio": [6.0], "ratio_floor": [floor_us / 100], "directions_s": [600e-6]}

    above = report.floor_reading(run(300, 40))
    assert "takes 3.0× F; even with its directions for free" in above
    assert "it takes 2.6× F, so the 2.3 target lies below what an eager step reaches" in above
    assert "The shipped step's 6.0× is 2.0× that floor" in above
    assert "take 600 µs against 40 µs for `torch.randn` (15.0×)" in above
    generator = report.floor_reading(run(250, 40))
    assert "it takes 2.1× F, so a step as lean whose directions took under 0.2× F (20 µs)" in (
        generator
    )
    assert "the gap is not a floor but this project's own per-call overhead" in generator
    assert "so the gap is this project's own" in report.floor_reading(run(210, 40))
    assert "dispatch overhead" in above and "native kernel" not in above
    assert "The native kernel makes them in one call" in report.floor_reading(run(300, 40), True)
    calls = report.floor_reading(run(300, 40) | {"ratio_native_calls": [1.9]}, True)
    assert "with buffers, views and stream keys made once) take 1.9× F." in calls
    assert "leaves 0.4× F (40 µs) for everything" in calls and "spends 4.1× F on" in calls
    over = report.floor_reading(run(300, 40) | {"ratio_native_calls": [2.5]}, True)
    assert "take 2.5× F: at this size the kernels alone already exceed" in over
    below = report.floor_reading(run(300, 40) | {"ratio": [2.0], "ratio_native_calls": [0.9]}, True)
    assert "The shipped step (2.0×) is under that floor" in below and "that floor." not in below
    assert "take 0.9× F, and everything the step does around them" in below
    assert "1.1× F (110 µs): Python per call is 55% of the step." in below


def test_figure_targets() -> None:
    common = _module("_common")
    assert common.met(60, "<= 64") is True
    assert common.met(98, "<= 64") is False
    assert common.met(2.5e7, ">= 1e7") is True
    assert common.met(3.0, None) is None
    fig = common.figure("x", "x", "B", [3, 1, 2], target="< 2.5")
    assert (fig["median"], fig["min"], fig["max"], fig["met"]) == (2, 1, 3, True)


def _sweep_run(method: str, nu: int, lr: float, aggregator: str, attack: str, acc: float) -> Any:
    """A text-sweep result as ``bench/text_experiment.py --sweep`` writes it (what the report
    reads): a flat validation curve at ``acc``."""
    cell = {"method": method, "nu": nu, "lr": lr, "batch": 128}
    cell |= {"aggregator": aggregator, "attack": attack}
    history = [{"round": r, "accuracy": acc} for r in range(0, 1500, 250)]
    return {"cell": cell, "history": history, "final_accuracy": acc}


def test_text_sweep_picks_the_step_with_the_best_worst_case() -> None:
    report = _module("report_text")
    runs = {}
    # Step 0.005 scores best without attack but collapses under ALIE with NNM+CWTM; 0.002 is a
    # little worse everywhere else and holds there: the worst case picks 0.002.
    for lr, clean, alie in ((0.002, 0.75, 0.73), (0.005, 0.76, 0.54)):
        for aggregator in report.AGGREGATORS:
            for attack in report.ATTACKS:
                bad = (aggregator, attack) == ("nnm+cwtm", "alie")
                run = _sweep_run("zo", 1, lr, aggregator, attack, alie if bad else clean)
                runs[f"{lr}-{aggregator}-{attack}"] = run
    # A setting not yet run under every attack, scoring under the chosen worst case: bounded out.
    runs["0.01"] = _sweep_run("zo", 1, 0.01, "cwtm", "none", 0.72)
    assert report.chosen_settings(runs) == {("zo", 1): ("zo", 1, 0.002, 128)}
    text = "\n".join(report.sweep_section(runs, {}))
    assert "step 0.002, batch 128 (worst score 73.0%" in text
    assert "CWTM alone would pick step 0.005" in text
    assert "so none could win" in text
    # Partial, but scoring above that worst case: the report says the choice is open.
    runs["0.01"] = _sweep_run("zo", 1, 0.01, "cwtm", "none", 0.74)
    assert "the choice is open there" in "\n".join(report.sweep_section(runs, {}))


def test_text_fewshot_section_counts_its_own_checks(tmp_path: Path) -> None:
    report = _module("report_text")
    folder = tmp_path / "fewshot-16"
    folder.mkdir()
    meta = {"shots": 16, "n_clients": 8, "alpha": 1.0, "batch": 128}
    meta |= {"shard_sizes": [32] * 8, "shard_fresh": [16] * 8}
    meta |= {"train_sentences": 256, "probe_sentences": 32}
    meta["reference"] = {"ridges": [1.0, 10.0], "ridge": 10.0, "train_sentences": 256}
    meta["reference"] |= {"validation_accuracy": [0.7, 0.72], "test_accuracy": 0.714}
    (folder / "meta.json").write_text(json.dumps(meta))

    def cell(final: float) -> dict[str, Any]:
        return {
            "cell": {"rounds": 20000},
            "initial_accuracy": 0.66,
            "final_accuracy": final,
            "scalars_per_client_round": 1,
            "total_bytes_per_client": 160_000,
        }

    finals = {"zo-nu1-cwtm-none": 0.76, "zo-nu1-cwtm-lf": 0.70}
    finals |= {"fo-cwtm-none": 0.70, "fo-cwtm-lf": 0.60}
    for name, final in finals.items():
        (folder / f"{name}.json").write_text(json.dumps(cell(final)))
    full = {"zo-nu1-cwtm-none": cell(0.78)}
    text = "\n".join(report.fewshot_section(folder, full))
    assert "## Few-shot: 16 sentences per class per client" in text
    assert "16·8 = 128 sentences per class" in text
    assert "| CYBER-0 ν=1 | cwtm | lf | 20000 | 66.0 | **70.0** | +4.0 | -6.0 | 1 |" in text
    assert (
        "without an attack CYBER-0 ends at 76.0–76.0% (+10.0 to +10.0 points over the start) "
        "and first-order FedSGD at 70.0–70.0%, against 78.0–78.0% for CYBER-0 in the full "
        "setting: with 256 training sentences" in text
    )
    assert (
        "For reference, the same closed-form head fitted centrally on all 256 of the clients' "
        "training sentences (λ=10, the best of 1, 10 on the validation sentences) reaches "
        "**71.4%** test accuracy" in text
    )
    # alie and sf did not run: only lf is compared, and it is beyond 3 points for both methods
    assert "CYBER-0 / first-order: lf +6.0 / +10.0 points" in text
    assert "on average: CYBER-0 lf, first-order lf (same rules" in text
    # none: >= 75% and >= start + 5 met; lf: within 3 and >= start + 5 not met
    assert "Targets on this setting (CYBER-0 cells): 2 of 4 checks met." in text
    assert "- ≥ 75.0%: 1 of 1 met\n" in text
    assert "- ≥ start + 5.0 points: 1 of 2 met; not met: ν=1 cwtm lf" in text
    assert "- within 3 points of no attack: 0 of 1 met; not met: ν=1 cwtm lf" in text
    assert "Not run: zo-nu1-cwtm-alie," in text
    assert report.fewshot_section(tmp_path / "fewshot-8", full) == []


def test_text_reference_probe_picks_its_ridge_on_validation() -> None:
    """Separable classes score 100% on validation at every ridge: the smallest wins the tie.
    Labels at random on validation: the choice follows those scores, not the test set's."""
    experiment = _module("text_experiment")
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 2
    pooled = torch.randn(300, 8, generator=gen) + 6.0 * (2 * labels[:, None] - 1)
    train, validation, test = torch.arange(100), torch.arange(100, 200), torch.arange(200, 300)
    ref = experiment.reference_probe(pooled, labels, train, validation, test)
    assert ref["validation_accuracy"] == [1.0] * len(experiment.REFERENCE_RIDGES)
    assert ref["ridge"] == experiment.REFERENCE_RIDGES[0]
    assert ref["test_accuracy"] == 1.0
    assert ref["train_sentences"] == 100
    shuffled = labels.clone()
    shuffled[validation] = torch.randint(0, 2, (100,), generator=gen)
    ref = experiment.reference_probe(pooled, shuffled, train, validation, test)
    best = max(ref["validation_accuracy"])
    assert ref["ridge"] == ref["ridges"][ref["validation_accuracy"].index(best)]


def test_text_experiment_refuses_bad_shots(capsys: pytest.CaptureFixture[str]) -> None:
    experiment = _module("text_experiment")
    for argv, message in (
        (["--shots", "-1"], "--shots must be >= 0; got -1"),
        (["--shots", "16", "--sweep"], "--sweep tunes the full setting"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            experiment.main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("loss", ["cross_entropy", "balanced_cross_entropy"])
def test_text_zo_vectors_match_the_engine_loss(loss: str) -> None:
    """The text experiment's closed-form client scalars equal the engine's central differences
    of the same loss closure (perturbed_losses on the module), per client, for both objectives;
    the two objectives differ on skewed batches. Tolerance: float32 losses differenced over
    2μ = 0.02 (rounding ~1e-7 / 0.02)."""
    experiment = _module("text_experiment")
    gen = torch.Generator().manual_seed(5)
    ln, head = torch.nn.LayerNorm(6), torch.nn.Linear(6, 2)
    with torch.no_grad():
        for p in (*ln.parameters(), *head.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen))
    top = experiment.TopHead(ln, head)
    batches = [
        (torch.randn(n, 6, generator=gen), torch.tensor([0] * fresh + [1] * (n - fresh)))
        for n, fresh in ((7, 1), (5, 3), (6, 6))
    ]
    zo = ZOSettings(nu=3, mu=0.01, lr=0.1, batch_size=7)
    generator = DirectionGenerator(11)
    got = experiment.zo_vectors(top, generator, zo, 4, batches, loss)
    flat = flat_parameters(top)
    sizes = [p.numel() for _, p in canonical_parameters(top)]
    z = generator.matrix(sizes, 4, 0, zo.nu).mul_(zo.mu)
    closure = loss_function(loss)
    want = torch.stack(
        [
            central_differences(
                perturbed_losses(top, closure, torch.cat([flat + z, flat - z]), batch).double(),
                zo.mu,
            )
            for batch in batches
        ]
    ).float()
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    other = "cross_entropy" if loss != "cross_entropy" else "balanced_cross_entropy"
    assert not torch.allclose(got, experiment.zo_vectors(top, generator, zo, 4, batches, other))


def test_text_usage_example_plan_is_a_valid_federator_config() -> None:
    """The example plan docs/results-text.md prints is one the federator accepts, as written."""
    report = _module("report_text")
    text = "\n".join(report.USAGE)
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = build_config(yaml.safe_load(block))
    assert config.plan.loss == "balanced_cross_entropy"
    assert config.plan.dataset.startswith("rotten_tomatoes")


def test_text_plain_objective_section_and_the_balanced_lf_reading(tmp_path: Path) -> None:
    """The plain objective's grid, kept in its own folder, gets its own table and target
    count, and the class-balanced grid's LF reading quotes both objectives' LF changes."""
    report = _module("report_text")
    folder = tmp_path / "cross-entropy"
    folder.mkdir()
    meta = {"f": 1, "alpha": 1.0, "shard_sizes": [10, 10, 10], "shard_fresh": [1, 5, 9]}
    (folder / "meta.json").write_text(json.dumps(meta))

    def cell(final: float, fresh: float) -> dict[str, Any]:
        return {
            "cell": {"method": "zo", "nu": 1, "lr": 0.002, "rounds": 20000},
            "initial_accuracy": 0.66,
            "final_accuracy": final,
            "final_predicted_positive": fresh,
            "scalars_per_client_round": 1,
            "total_bytes_per_client": 160_000,
        }

    plain = {"zo-nu1-cwtm-none": cell(0.76, 0.5), "zo-nu1-cwtm-lf": cell(0.70, 0.65)}
    for name, data in plain.items():
        (folder / f"{name}.json").write_text(json.dumps(data))
    text = "\n".join(report.plain_section(folder, {}))
    assert "## The plain cross-entropy objective" in text
    assert "(CYBER-0 ν=1 0.002; `bench/results/text/cross-entropy/`" in text
    assert "| CYBER-0 ν=1 | cwtm | lf | 20000 | 66.0 | **70.0** | +4.0 | -6.0 | 1 |" in text
    assert "Targets with this objective (CYBER-0 cells): 2 of 4 checks met." in text
    # client 0 flips 10% fresh into 90%: the equally weighted prior goes from 50% to 76.7%
    assert "moves from 50.0% with no attack to 76.7% under LF" in text
    balanced = {"zo-nu1-cwtm-none": cell(0.75, 0.5), "zo-nu1-cwtm-lf": cell(0.74, 0.52)}
    reading = report.lf_balanced_reading(balanced, meta, plain)
    assert "label 50.0% of the test sentences fresh with no attack and 52.0% under LF" in reading
    assert reading.endswith("LF changes: -1.0 points, against -6.0 with the plain mean loss.")
    assert report.plain_section(tmp_path / "absent", {}) == []
