"""``cyber0-demo``: the whole federation on loopback, every party its own process.

Starts a federator, honest client daemons, one colluding Byzantine daemon holding the Byzantine
identities, and an observer; prints a line per round (accuracy as last reported by the
observer, payload bytes up and down per client) and a final summary; the observer writes the
final weights to ``WORKDIR/model.safetensors``. Exits 0 when every party finished with the same
model digest, 1 when a party failed (its last log line is printed), 2 on a bad option or a
plan the federator refuses.

The plan is MNIST logistic regression unless ``--plan FILE`` (plan fields, as in the
federator's YAML) replaces parts of it; ``--data TEMPLATE`` gives every daemon its own examples
for a ``local`` plan (``{id}``: ``honest-1`` …, ``byzantine-1`` …, ``observer``: the Docker
stack's names, so one data folder serves both).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from cyber0 import add_version_option
from cyber0.common.config import for_identity
from cyber0.common.localdata import check_data_path
from cyber0.common.plan import LOSSES
from cyber0.wire import PROTOCOL_VERSION


def training_ids(args: argparse.Namespace) -> list[str]:
    """The training identities in shard order, named and enrolled as the Docker stack does:
    ``honest-1`` … ``honest-H``, then ``byzantine-1`` … ``byzantine-B``."""
    honest = [f"honest-{i}" for i in range(1, args.honest + 1)]
    return honest + [f"byzantine-{i}" for i in range(1, args.byzantine + 1)]


#: Plan fields the party counts decide (``--honest``, ``--byzantine``): not in ``--plan``.
COUNTED = ("n_clients", "f")


def default_plan(args: argparse.Namespace) -> dict[str, Any]:
    """The demo's training plan (MNIST logistic regression, Dirichlet(1) label skew) and its
    enrolment, so that every identity gets the same shard in every run, whatever the order the
    daemons connect in. ``--plan`` replaces the fields it names (``zo`` and ``federator`` key
    by key); ``--seed``, ``--aggregator``, ``--rounds``, ``--loss`` and ``--nu``, when given,
    win over both. ValueError for a ``--plan`` file that is not a mapping, sets
    ``n_clients``/``f``, or gives ``zo`` or ``federator`` as something else than a mapping."""
    plan: dict[str, Any] = {
        "seed": 0,
        "model": "logreg",
        "dataset": "mnist",
        "partition": "dirichlet",
        "alpha": 1.0,
        "aggregator": "cwtm",
        "rounds": 300,
        "zo": {"nu": 64, "local_steps": 1, "mu": 0.001, "lr": 0.002, "batch_size": 64},
        "federator": {"round_timeout": 30.0, "linger": 60.0},
    }
    if args.plan is not None:
        mine = yaml.safe_load(Path(args.plan).read_text())
        if not isinstance(mine, dict):
            raise ValueError(f"--plan {args.plan}: expected a mapping of plan fields")
        counted = sorted(set(COUNTED) & set(mine))
        if counted:
            raise ValueError(
                f"--plan {args.plan}: {', '.join(counted)} come from --honest and --byzantine"
            )
        for key, value in mine.items():
            if isinstance(plan.get(key), dict):
                if not isinstance(value, dict):
                    raise ValueError(
                        f"--plan {args.plan}: {key} must be a mapping of fields; got {value!r}"
                    )
                value = {**plan[key], **value}
            plan[key] = value
    flags = {
        "seed": args.seed,
        "aggregator": args.aggregator,
        "rounds": args.rounds,
        "loss": args.loss,
    }
    plan.update({key: value for key, value in flags.items() if value is not None})
    if args.nu is not None:
        plan["zo"] = {**plan["zo"], "nu": args.nu}
    plan["n_clients"], plan["f"] = args.honest + args.byzantine, args.byzantine
    plan["federator"] = {**plan["federator"], "enrolment": training_ids(args)}
    return plan


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cyber0-demo", description=__doc__.splitlines()[0])
    add_version_option(p, PROTOCOL_VERSION)
    p.add_argument("--rounds", type=int, help="rounds (300)")
    p.add_argument("--honest", type=int, default=8)
    p.add_argument("--byzantine", type=int, default=2)
    p.add_argument("--attack", default="alie")
    p.add_argument("--aggregator", help="robust rule (cwtm)")
    p.add_argument("--nu", type=int, help="directions per local step (64)")
    p.add_argument("--seed", type=int, help="master seed (0)")
    p.add_argument("--loss", choices=LOSSES, help="the clients' objective (cross_entropy)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument(
        "--plan", metavar="FILE.yaml", help="plan fields replacing the demo's (not n_clients, f)"
    )
    p.add_argument(
        "--data",
        metavar="TEMPLATE",
        help="each daemon's own examples for a local plan ({id}: honest-1, ..., byzantine-1, "
        "..., observer)",
    )
    p.add_argument(
        "--workdir",
        default="runs/demo",
        help="config, metrics, log and outputs (a run replaces an earlier run's, nothing else)",
    )
    p.add_argument("--quiet", action="store_true", help="only the final summary")
    return p


@dataclass
class Party:
    """A started daemon and where its output goes."""

    name: str
    process: subprocess.Popen[str]
    ids: list[str]
    stdout: IO[str] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


def spawn(
    args: Sequence[str], out: Path, err: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python ARGS`` with stdout and stderr appended to files (closed here at once:
    the child keeps its own descriptors), with ``env`` added to this process's environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    with out.open("a") as stdout, err.open("a") as stderr:
        return subprocess.Popen(
            [sys.executable, *args], stdout=stdout, stderr=stderr, text=True, env=env
        )


def wait_ready(proc: subprocess.Popen[str], out: Path, timeout: float = 120.0) -> int:
    """The port from the federator's ``listening on HOST:PORT`` line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines() if out.exists() else []:
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the federator did not start; see {out.with_suffix('.log')}")


#: What a demo run writes in its workdir (``--workdir``): the plan, the federator's metrics and
#: durable log, the observer's model, and each process's output and log.
RUN_FILES = (
    "federation.yaml",
    "metrics.jsonl",
    "model.safetensors",
    "federator.db",
    "federator.db-*",
    *(
        f"{stem}.{kind}"
        for stem in ("federator", "observer", "byzantine", "honest-*")
        for kind in ("out", "log")
    ),
)


def clear_run_files(workdir: Path) -> None:
    """Remove what an earlier run wrote in ``workdir`` (a fresh run must not resume its durable
    log or read its metrics); a file of another name, or a folder, stays."""
    for pattern in RUN_FILES:
        for path in workdir.glob(pattern):
            if path.is_file():
                path.unlink()


def start_federator(workdir: Path, config: Path) -> tuple[subprocess.Popen[str], int]:
    """Start the federator on a free loopback port; return it and the port."""
    out = workdir / "federator.out"
    args = ["-m", "cyber0.server.cli", "--config", str(config), "--host", "127.0.0.1"]
    args += ["--port", "0", "--metrics", str(workdir / "metrics.jsonl")]
    args += ["--log-db", str(workdir / "federator.db")]
    if sys.platform.startswith("linux"):  # the kernel's TCP byte counters
        args.append("--wire-metrics")
    proc = spawn(args, out, workdir / "federator.log")
    return proc, wait_ready(proc, out)


def start_clients(args: argparse.Namespace, workdir: Path, port: int) -> list[Party]:
    """The honest daemons, the colluding Byzantine daemon and the observer."""
    target = f"127.0.0.1:{port}"
    base = ["-m", "cyber0.client.cli", "--target", target]
    if args.data is not None:
        base += ["--data", args.data]
    parties = []
    # The observer first: rounds wait for training clients only, so it must not start behind.
    observer = ["--role", "observer", "--eval-every", str(args.eval_every)]
    observer += ["--save-model", str(workdir / "model.safetensors")]
    specs: list[tuple[str, list[str], list[str]]] = [("observer", ["observer"], observer)]
    ids = training_ids(args)
    specs += [(i, [i], []) for i in ids[: args.honest]]
    if args.byzantine:
        byzantine = ["--role", "byzantine", "--attack", args.attack]
        specs.append(("byzantine", ids[args.honest :], byzantine))
    for name, ids, extra in specs:
        id_args = [a for i in ids for a in ("--id", i)]
        proc = spawn([*base, *id_args, *extra], workdir / f"{name}.out", workdir / f"{name}.log")
        parties.append(Party(name, proc, ids))
    return parties


def wire_per_connection(record: dict[str, Any]) -> tuple[float, float] | None:
    """TCP payload bytes (up, down) a connection carried in the round, on average (``None``
    without the federator's ``--wire-metrics``)."""
    if "wire_connections" not in record:
        return None
    connections = max(record["wire_connections"], 1)
    return (
        record["uplink_wire_bytes"] / connections,
        record["downlink_wire_bytes"] / connections,
    )


def round_line(record: dict[str, Any], accuracy: dict[str, Any]) -> str:
    """One live line: round, the observer's latest accuracy, payload bytes per client and,
    where counted, the bytes on the wire per connection."""
    acc = f"{accuracy['value']:.4f} (round {accuracy['round']})" if accuracy else "-"
    up = record["uplink_payload_bytes"] // max(len(record["participants"]), 1)
    down = record["downlink_payload_bytes"] // max(record["recipients"], 1)
    on_wire = wire_per_connection(record)
    wire = f"  wire {sum(on_wire):6.0f} B/conn" if on_wire is not None else ""
    return (
        f"round {record['round']:4d}  accuracy {acc:>20}  "
        f"up {up:5d} B/client  down {down:5d} B/client{wire}  {record['round_ms']:7.1f} ms"
    )


def follow(
    metrics: Path, rounds: int, procs: Sequence[subprocess.Popen[str]], quiet: bool
) -> dict[str, Any]:
    """Print a line per round from the federator's metrics until the last round and the
    observer's last report are in (or a process ends); return the summary figures."""
    accuracy: dict[str, Any] = {}
    totals: dict[str, float] = {"rounds": 0, "up": 0, "down": 0, "round_ms": 0.0}
    on_wire: list[tuple[float, float]] = []
    offset = 0
    while True:
        lines: list[str] = []
        if metrics.exists():
            with metrics.open() as fh:
                fh.seek(offset)
                lines = [line for line in fh if line.endswith("\n")]
            offset += sum(len(line.encode()) for line in lines)
        for record in map(json.loads, lines):
            if record.get("event") == "report" and record.get("accuracy") is not None:
                accuracy = {"round": record["round"], "value": record["accuracy"]}
            elif record.get("event") == "round":
                totals["rounds"] = record["round"] + 1
                totals["up"] += record["uplink_payload_bytes"]
                totals["down"] += record["downlink_payload_bytes"]
                totals["round_ms"] += record["round_ms"]
                counted = wire_per_connection(record)
                if counted is not None and record["round"] > 0:  # round 0 holds the joins
                    on_wire.append(counted)
                if not quiet:
                    print(round_line(record, accuracy), flush=True)
        done = totals["rounds"] >= rounds and accuracy.get("round") == rounds - 1
        if done or any(p.poll() is not None for p in procs):
            return {**totals, "accuracy": accuracy, "wire": on_wire}
        time.sleep(0.2)


def wire_summary(on_wire: Sequence[tuple[float, float]]) -> str:
    """The summary's line on the bytes on the wire (empty when they were not counted)."""
    if not on_wire:
        return ""
    up = statistics.median(u for u, _ in on_wire)
    down = statistics.median(d for _, d in on_wire)
    return (
        f"on the wire (TCP payload, the federator's kernel counters; median round after the "
        f"first): up {up:.0f} B, down {down:.0f} B per connection\n"
    )


def check_data(args: argparse.Namespace) -> None:
    """ValueError naming the first ``--data`` file missing or of an unknown kind."""
    if args.data is not None:
        for client_id in ["observer", *training_ids(args)]:
            check_data_path(for_identity(args.data, client_id))


def failure(workdir: Path, parties: Sequence[Party]) -> str:
    """What the parties that ended with an error said (the last line of each log)."""
    lines = []
    for party in parties:
        code = party.process.poll()
        if code not in (None, 0):
            log = (workdir / f"{party.name}.log").read_text().strip().splitlines()
            lines.append(f"{party.name} exit {code}: {log[-1] if log else ''}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    try:
        plan = default_plan(args)
        check_data(args)
    except (ValueError, OSError, yaml.YAMLError) as exc:
        print(f"cyber0-demo: {exc}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    clear_run_files(workdir)
    config = workdir / "federation.yaml"
    config.write_text(yaml.safe_dump(plan, sort_keys=False))
    started = time.perf_counter()
    try:
        federator, port = start_federator(workdir, config)
    except RuntimeError as exc:  # e.g. a --plan field the federator refuses
        said = (workdir / "federator.log").read_text().strip().splitlines()
        print(f"cyber0-demo: {exc}\n{said[-1] if said else ''}", file=sys.stderr)
        return 2
    print(f"federator on 127.0.0.1:{port}; logs and metrics in {workdir}/", flush=True)
    parties: list[Party] = []
    try:
        parties = start_clients(args, workdir, port)
        summary = follow(
            workdir / "metrics.jsonl",
            plan["rounds"],
            [federator, *(p.process for p in parties)],
            args.quiet,
        )
        failed_early = failure(workdir, parties)
        if failed_early or federator.poll() not in (None, 0):
            print(f"cyber0-demo: a party stopped\n{failed_early}", file=sys.stderr)
            return 1
        codes = {p.name: p.process.wait(timeout=120) for p in parties}
        federator_code = federator.wait(timeout=60)
    finally:
        procs = [*(p.process for p in parties), federator]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    digests: dict[str, str] = {}
    for party in parties:
        for line in (workdir / f"{party.name}.out").read_text().splitlines():
            result = json.loads(line)
            digests[result["client"]] = result["digest"]
    failed = {name: code for name, code in codes.items() if code != 0}
    n = args.honest + args.byzantine
    rounds = max(summary["rounds"], 1)
    agree = len(set(digests.values())) == 1 and len(digests) == n + 1
    acc = summary["accuracy"]
    print(
        f"\n{summary['rounds']} rounds in {summary['round_ms'] / 1e3:.1f} s "
        f"({time.perf_counter() - started:.1f} s with start-up and the last evaluation); "
        f"final test accuracy (observer) {acc.get('value', float('nan')):.4f}\n"
        f"payload per client per round: up {summary['up'] / rounds / n:.0f} B, "
        f"down {summary['down'] / rounds / (n + 1):.0f} B\n"
        f"{wire_summary(summary['wire'])}"
        f"final model digests: {len(digests)} parties, "
        f"{'all equal' if agree else 'DIFFERENT'} ({next(iter(digests.values()), '')[:16]}); "
        f"weights in {workdir / 'model.safetensors'}"
    )
    if failed or federator_code != 0 or not agree:
        print(f"failures: {failed or ''} federator exit {federator_code}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
