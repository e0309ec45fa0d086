"""Federator scale: many lightweight clients against one federator process.

    python bench/scale.py                          # 100, 1000, 2000 clients; CWTM and Krum
    python bench/scale.py --clients 100 --quick    # the smoke test
    python bench/scale.py --profile                # py-spy profile of the federator too

One federator process (the shipped ``cyber0-federator`` CLI) and ``--procs`` client processes,
each holding its share of the training identities as :class:`~cyber0.client.session.Session` s
with a trivial trainer (a fixed vector of ν·K floats, no model): every session has its own
channel, TCP connection, Train stream and identity. ν = 64, K = 1.

Reported per (rule, n), over the rounds after the connection storm:

* rounds per second (wall) — on this 2-core machine the client processes share the cores with
  the federator, so this is a lower bound for the federator;
* the federator's own CPU time per round (``/proc/<pid>/stat`` user + system, sampled every
  50 ms and cut at the round times of the metrics file): all the work the federator does for a
  round, receiving n updates, checking them, aggregating, committing, broadcasting n aggregates
  and n round starts;
* the metrics' ``round_ms`` (round opened → broadcast, wall; includes the clients' response time)
  and ``aggregate_ms`` (the rule alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, command_line, figure, machine, started, write_result

TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- client process
class FixedTrainer:
    """The lightest possible trainer: the same m floats every round, aggregates counted."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.values: list[float] = []
        self._applied = -1

    def setup(self, plan: Any, shard_index: int, client_id: str) -> None:
        m = plan.zo.scalars_per_round
        self.values = [((self.seed * 31 + j) % 97) / 97.0 - 0.5 for j in range(m)]

    @property
    def applied_round(self) -> int:
        return self._applied

    def compute_update(self, round: int) -> list[float]:
        return self.values

    def apply_aggregate(self, round: int, values: Sequence[float]) -> None:
        self._applied = round

    def digest(self) -> str:
        return f"{self._applied + 1:08x}"


def clients_main(args: argparse.Namespace) -> int:
    """``_clients``: ``--count`` sessions with ids ``c<first>`` … on one event loop."""
    import grpc
    import uvloop

    from cyber0.client.session import Backoff, Session, SessionConfig, channel_options

    options = channel_options()  # the shipped client's: keepalive, a TCP connection per channel

    def channel(target: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(target, options=options)

    sessions = [
        Session(
            SessionConfig(
                args.target,
                f"c{i}",
                call_timeout=120.0,
                backoff=Backoff(initial=0.5, maximum=5.0),
                max_retries=30,
            ),
            FixedTrainer(i),
            channel_factory=channel,
        )
        for i in range(args.first, args.first + args.count)
    ]

    async def main() -> list[Any]:
        # Stagger the joins a little so that one process does not open hundreds of
        # connections in the same millisecond.
        async def one(k: int, s: Session) -> Any:
            await asyncio.sleep(k * args.stagger)
            return await s.run()

        return list(
            await asyncio.gather(
                *(one(k, s) for k, s in enumerate(sessions)), return_exceptions=True
            )
        )

    results = uvloop.run(main())
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    reconnects = sum(r.reconnects for r in results if not isinstance(r, BaseException))
    Path(args.out).write_text(json.dumps({"failed": failed, "reconnects": reconnects}))
    return 0 if not failed else 1


# --------------------------------------------------------------------------- orchestration
def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _sample_cpu(
    pid: int, samples: list[tuple[float, float, float]], rss: list[float], stop: asyncio.Event
) -> None:
    """Sample the CPU times of ``pid`` every 50 ms (and its peak RSS) until ``stop``."""
    while not stop.is_set():
        try:
            samples.append((time.time(), *_cpu_seconds(pid)))
            peak = _rss_mib(pid)  # NaN once the process is a zombie: keep the last value
            if peak == peak:
                rss[0] = peak
        except (OSError, IndexError):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


def _cpu_at(samples: Sequence[tuple[float, float, float]], t: float, which: int = 0) -> float:
    """CPU seconds (``which``: 0 user + system, 1 user, 2 system) at wall time ``t``, linearly
    interpolated between samples."""

    def value(s: tuple[float, float, float]) -> float:
        return s[1] + s[2] if which == 0 else s[which]

    for a, b in itertools.pairwise(samples):
        if a[0] <= t <= b[0]:
            if b[0] == a[0]:
                return value(b)
            return value(a) + (value(b) - value(a)) * (t - a[0]) / (b[0] - a[0])
    return value(samples[-1]) if t > samples[-1][0] else value(samples[0])


def _sys_fraction(samples: Sequence[tuple[float, float, float]], t0: float, t1: float) -> float:
    """The system share of the CPU time spent between ``t0`` and ``t1``, in [0, 1]: from the two
    parts themselves (user + system interpolated as one sum can round below the system part
    when the user part does not grow)."""
    user = _cpu_at(samples, t1, 1) - _cpu_at(samples, t0, 1)
    system = _cpu_at(samples, t1, 2) - _cpu_at(samples, t0, 2)
    return system / max(1e-9, user + system)


async def run_case(
    *,
    n: int,
    aggregator: str,
    rounds: int,
    procs: int,
    profile: Path | None,
    timeout: float,
    prelude: str | None = None,
) -> dict[str, Any]:
    """One federator and ``procs`` client processes holding ``n`` identities. ``prelude``:
    Python run in the federator process before the CLI (A/B experiments)."""
    f = max(1, n // 5)
    with tempfile.TemporaryDirectory(prefix="cyber0-scale-") as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        prefix = (
            [
                "-c",
                prelude + "\nimport sys\nfrom cyber0.server.cli import main\n"
                "sys.exit(main(sys.argv[1:]))",
            ]
            if prelude
            else ["-m", "cyber0.server.cli"]
        )
        cmd = [
            sys.executable, *prefix,
            "--clients", str(n), "--byzantine", str(f), "--nu", "64", "--local-steps", "1",
            "--aggregator", aggregator, "--rounds", str(rounds), "--port", "0",
            "--metrics", str(metrics), "--linger", "30", "--round-timeout", str(timeout),
            "--log-level", "WARNING",
        ]  # fmt: skip
        fed = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT)
        )
        assert fed.stdout is not None
        line = (await asyncio.wait_for(fed.stdout.readline(), 60)).decode()
        if "listening on" not in line:
            fed.kill()
            raise RuntimeError(f"federator did not start: {line!r}")
        target = line.strip().rsplit(" ", 1)[1]
        spy = None
        if profile is not None:
            beside = Path(sys.executable).with_name("py-spy")  # the venv's, when not on PATH
            spy = await asyncio.create_subprocess_exec(
                str(beside) if beside.exists() else "py-spy",
                "record", "--pid", str(fed.pid), "--rate", "200",
                "--format", "speedscope", "--output", str(profile),
                *(["--native"] if os.environ.get("CYBER0_PYSPY_NATIVE") else ["--nonblocking"]),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        samples: list[tuple[float, float, float]] = []
        stop = asyncio.Event()
        peak_rss = [float("nan")]
        sampler = asyncio.ensure_future(_sample_cpu(fed.pid, samples, peak_rss, stop))
        share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        clients = []
        first = 0
        t_start = time.time()
        for i, count in enumerate(share):
            out = Path(tmp) / f"clients{i}.json"
            clients.append(
                (
                    await asyncio.create_subprocess_exec(
                        sys.executable, str(Path(__file__).resolve()), "_clients",
                        "--target", target, "--first", str(first), "--count", str(count),
                        "--out", str(out), "--stagger", str(0.002),
                        cwd=str(ROOT),
                    ),
                    out,
                )
            )  # fmt: skip
            first += count
        try:
            codes = await asyncio.wait_for(
                asyncio.gather(*(p.wait() for p, _ in clients)), timeout * (rounds + 5)
            )
            fed_rc = await asyncio.wait_for(fed.wait(), 60)
        finally:
            stop.set()
            await sampler
            for p, _ in clients:
                if p.returncode is None:
                    p.kill()
            if fed.returncode is None:
                fed.send_signal(signal.SIGTERM)
                await fed.wait()
            if spy is not None:
                try:
                    await asyncio.wait_for(spy.wait(), 30)
                except TimeoutError:
                    spy.kill()
        summaries = [json.loads(out.read_text()) for _, out in clients if out.exists()]
        records = [json.loads(x) for x in metrics.read_text().splitlines()]
    rounds_rec = [r for r in records if r.get("event") == "round"]
    if len(rounds_rec) != rounds or any(codes):
        raise RuntimeError(
            f"n={n} {aggregator}: {len(rounds_rec)} of {rounds} rounds, client exit codes {codes}"
            f", failures {[s['failed'][:3] for s in summaries]}"
        )
    # Steady state: skip the first rounds (joins, connection storm, first catch-up).
    skip = min(3, rounds - 3)
    window = rounds_rec[skip:]
    t0, t1 = window[0]["time"], window[-1]["time"]
    periods = len(window) - 1
    cpu_per_round = [
        (_cpu_at(samples, b["time"]) - _cpu_at(samples, a["time"])) * 1e3
        for a, b in itertools.pairwise(window)
    ]
    return {
        "n": n,
        "f": f,
        "aggregator": aggregator,
        "rounds": rounds,
        "procs": procs,
        "window_rounds": periods,
        "rounds_per_s": periods / (t1 - t0) if t1 > t0 else None,
        "round_period_ms": [(b["time"] - a["time"]) * 1e3 for a, b in itertools.pairwise(window)],
        "federator_cpu_ms_per_round": cpu_per_round,
        "federator_sys_fraction": _sys_fraction(samples, t0, t1),
        "round_ms": [r["round_ms"] for r in window],
        "aggregate_ms": [r["aggregate_ms"] for r in window],
        "participants": [len(r["participants"]) for r in window],
        "setup_s": rounds_rec[0]["time"] - t_start,
        "federator_peak_rss_mib": peak_rss[0],
        "federator_exit": fed_rc,
        "reconnects": sum(s["reconnects"] for s in summaries),
        "profile": str(profile) if profile else None,
    }


def figures(cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(c["aggregator"], c["n"]) for c in cases})
    for rule, n in keys:
        runs = [c for c in cases if (c["aggregator"], c["n"]) == (rule, n)]
        cpu = [statistics.median(c["federator_cpu_ms_per_round"]) for c in runs]
        target = "< 500" if rule == "cwtm" and n == 2000 else None
        out.append(
            figure(
                f"scale.{rule}.n{n}.federator_cpu_ms",
                f"{rule}, n={n}, ν=64, K=1: federator CPU time per round",
                "ms",
                cpu,
                target=target,
                note="median over the steady-state rounds of each run; runs = separate runs",
            )
        )
        out.append(
            figure(
                f"scale.{rule}.n{n}.round_ms",
                f"{rule}, n={n}: round_ms (round opened → broadcast, wall, clients sharing the "
                "2 cores)",
                "ms",
                [statistics.median(c["round_ms"]) for c in runs],
            )
        )
        out.append(
            figure(
                f"scale.{rule}.n{n}.aggregate_ms",
                f"{rule}, n={n}: aggregate_ms (the rule on n × 64 floats)",
                "ms",
                [statistics.median(c["aggregate_ms"]) for c in runs],
            )
        )
        out.append(
            figure(
                f"scale.{rule}.n{n}.rounds_per_s",
                f"{rule}, n={n}: rounds per second (wall, federator + all clients on 2 cores)",
                "rounds/s",
                [c["rounds_per_s"] for c in runs if c["rounds_per_s"]],
            )
        )
    return out


async def main_async(
    args: argparse.Namespace, failures: list[dict[str, Any]], compared: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    cases = []
    profiles = Path(args.out or ROOT / "bench" / "results") / "profiles"
    for repeat in range(args.repeats):
        for n in args.clients:
            for rule in args.aggregators:
                profile = None
                if args.profile and repeat == 0:
                    profiles.mkdir(parents=True, exist_ok=True)
                    profile = profiles / f"scale-{rule}-n{n}.speedscope.json"
                procs = max(1, min(args.procs, n // 50 or 1))
                for variant in (None, args.compare_prelude) if args.compare_prelude else (None,):
                    try:
                        case = await run_case(
                            n=n,
                            aggregator=rule,
                            rounds=args.rounds,
                            procs=procs,
                            profile=profile,
                            timeout=args.round_timeout,
                            prelude=variant,
                        )
                    except (RuntimeError, TimeoutError, OSError) as exc:
                        if args.quick:
                            raise
                        print(f"{rule} n={n}: failed: {exc}", flush=True)
                        failures.append(
                            {"n": n, "aggregator": rule, "repeat": repeat, "error": str(exc)[:2000]}
                        )
                        continue
                    case["repeat"] = repeat
                    case["prelude"] = variant
                    if variant is None:
                        cases.append(case)
                    else:
                        compared.append(case)
                    print(
                        f"{'[prelude] ' if variant else ''}{rule} n={n}: "
                        f"{case['rounds_per_s']:.2f} rounds/s, federator CPU "
                        f"{statistics.median(case['federator_cpu_ms_per_round']):.0f} ms/round, "
                        f"round_ms {statistics.median(case['round_ms']):.0f}, aggregate_ms "
                        f"{statistics.median(case['aggregate_ms']):.1f}, system CPU "
                        f"{case['federator_sys_fraction']:.0%}",
                        flush=True,
                    )
    return cases


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    c = sub.add_parser("_clients")
    c.add_argument("--target", required=True)
    c.add_argument("--first", type=int, required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--stagger", type=float, default=0.0)
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 2000])
    p.add_argument("--aggregators", nargs="+", default=["cwtm", "krum"])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--procs", type=int, default=4, help="client processes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--round-timeout", type=float, default=60.0)
    p.add_argument("--profile", action="store_true", help="py-spy the federator (first repeat)")
    p.add_argument(
        "--compare-prelude",
        metavar="CODE",
        help="A/B: after each run, run the same case with CODE executed in the federator "
        "process first (e.g. 'import cyber0.server.app as a; a.tune_gc = lambda: None')",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--out", help="results folder (default bench/results)")
    p.add_argument("--name", default="scale")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "_clients":
        return clients_main(args)
    if args.quick:
        args.clients, args.rounds, args.repeats, args.procs = args.clients[:1], 6, 1, 1
        args.aggregators = args.aggregators[:1]
    doc: dict[str, Any] = {"command": command_line(), "machine": machine(), "started": started()}
    failures: list[dict[str, Any]] = []
    compared: list[dict[str, Any]] = []
    doc["cases"] = asyncio.run(main_async(args, failures, compared))
    doc["failures"] = failures
    doc["compare_prelude"] = args.compare_prelude
    doc["compared"] = compared
    doc["figures"] = figures(doc["cases"])
    if compared:
        doc["figures"] += [
            {
                **f,
                "id": f["id"] + ".prelude",
                "label": f["label"] + f" — federator with prelude `{args.compare_prelude}`",
                "target": None,
                "met": None,
            }
            for f in figures(compared)
            if f["id"].endswith("federator_cpu_ms")
        ]
    path = write_result(args.name, doc, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
