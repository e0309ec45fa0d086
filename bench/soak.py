"""Soak: N streaming clients for R rounds against one federator process on loopback.

    python bench/soak.py --clients 1000 --rounds 200 [--per-process 250] [--nu 8]
                         [--max-growth-mb 32] [--out FILE.json]

Starts ``cyber0-federator`` (mean rule, f = 0, quorum = n: a round needs every client) and
⌈N / per-process⌉ worker processes, each running ``per-process`` client sessions (the client
daemon's :class:`~cyber0.client.session.Session`, each with its own identity, channel, TCP
connection and stream) with a fake trainer that sends seeded Gaussian vectors and checks that
aggregates arrive once each and in order. While it runs it samples the federator's RSS every
SAMPLE_SECONDS, and once more when the clients are done (a short run can finish between two
samples). Checks, printed and written as JSON:

* rounds: the federator's metrics list rounds 0 … R−1, each exactly once, each with all N
  participants (no dropped or duplicated round, no client left out);
* clients: every client applied rounds 0 … R−1 in order, none reconnected, all end with the same
  digest;
* memory: the federator's RSS once 10 % of the rounds are done (everyone connected) and its
  maximum afterwards differ by at most ``--max-growth-mb``.

Exit 0 when every check passes, 1 otherwise. Figures are for documentation, not assertions on
time. No torch in the workers: a worker process imports grpc and numpy only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cyber0.client.session import Backoff, Session, SessionConfig
from cyber0.common.plan import TrainingPlan

#: How often the federator's RSS is sampled while the clients run.
SAMPLE_SECONDS = 0.2


class RandomTrainer:
    """A fake model: seeded Gaussian updates; aggregates must come once each, in order."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._m = 0
        self._applied = -1
        self._hash = hashlib.sha256()

    def setup(self, plan: TrainingPlan, shard_index: int, client_id: str) -> None:
        self._m = plan.zo.scalars_per_round

    @property
    def applied_round(self) -> int:
        return self._applied

    def compute_update(self, round: int) -> Sequence[float]:
        vector = np.random.default_rng([self._seed, round]).standard_normal(self._m)
        values: list[float] = vector.astype(np.float32).tolist()
        return values

    def apply_aggregate(self, round: int, values: Sequence[float]) -> None:
        if round != self._applied + 1:
            raise ValueError(f"aggregate {round} after {self._applied}")
        self._hash.update(np.asarray(values, dtype="<f4").tobytes())
        self._applied = round

    def digest(self) -> str:
        return self._hash.hexdigest()[:32]


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process, MiB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


async def run_worker(target: str, first: int, count: int) -> dict[str, Any]:
    """``count`` sessions ``soak-<first>`` … in this process; their outcome in one record."""
    backoff = Backoff(initial=0.5, maximum=5.0)
    sessions = [
        Session(
            SessionConfig(target, f"soak-{i}", backoff=backoff, max_retries=20, call_timeout=60),
            RandomTrainer(seed=i),
        )
        for i in range(first, first + count)
    ]
    results = await asyncio.gather(*(s.run() for s in sessions), return_exceptions=True)
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    done = [r for r in results if not isinstance(r, BaseException)]
    return {
        "clients": count,
        "failures": failures,
        "applied": sorted({r.applied_round for r in done}),
        "digests": sorted({r.digest for r in done}),
        "reconnects": sum(r.reconnects for r in done),
        "rss_mb": round(rss_mb(), 1),
    }


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_federator(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "cyber0.server.cli", "--port", "0", "--log-level", "WARNING",
        "--clients", str(args.clients), "--byzantine", "0", "--aggregator", "mean",
        "--nu", str(args.nu), "--rounds", str(args.rounds), "--seed", "1",
        "--round-timeout", str(args.round_timeout), "--linger", "30",
        "--metrics", str(workdir / "metrics.jsonl"), "--log-db", str(workdir / "federator.db"),
    ]  # fmt: skip
    log = (workdir / "federator.log").open("w")
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=_raise_fd_limit
    )
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        proc.wait()
        raise SystemExit(f"the federator did not start: {(workdir / 'federator.log').read_text()}")
    return proc, line.rsplit(" ", 1)[1].strip()


def read_rounds(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "round"]


def rounds_done(path: Path) -> int:
    """Round lines in the metrics file so far (cheap: no JSON parsing)."""
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if b'"event": "round"' in line)


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; return the figures and the checks."""
    with tempfile.TemporaryDirectory(prefix="cyber0-soak-") as tmp:
        workdir = Path(tmp)
        metrics = workdir / "metrics.jsonl"
        started = time.monotonic()
        federator, address = start_federator(args, workdir)
        workers: list[subprocess.Popen[str]] = []
        samples: list[tuple[float, int, float]] = []
        try:
            for first in range(0, args.clients, args.per_process):
                count = min(args.per_process, args.clients - first)
                command = [sys.executable, __file__, "--worker", "--target", address,
                           "--first", str(first), "--count", str(count)]  # fmt: skip
                workers.append(
                    subprocess.Popen(
                        command, stdout=subprocess.PIPE, text=True, preexec_fn=_raise_fd_limit
                    )
                )
            deadline = started + args.timeout

            def sample() -> None:
                samples.append(
                    (time.monotonic() - started, rounds_done(metrics), rss_mb(federator.pid))
                )

            while any(w.poll() is None for w in workers):
                if time.monotonic() > deadline:
                    raise SystemExit(f"soak: not done after {args.timeout:g} s")
                sample()
                time.sleep(SAMPLE_SECONDS)
            if federator.poll() is None:  # lingering after the last round: still sampled
                sample()
            outputs = [json.loads(w.communicate()[0].splitlines()[-1]) for w in workers]
            federator_code = federator.wait(timeout=60)
        finally:
            for proc in [*workers, federator]:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            if federator.stdout is not None:
                federator.stdout.close()
        wall = time.monotonic() - started
        rounds = read_rounds(metrics)
    return report(args, rounds, outputs, samples, federator_code, wall)


def report(
    args: argparse.Namespace,
    rounds: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    samples: list[tuple[float, int, float]],
    federator_code: int,
    wall: float,
) -> dict[str, Any]:
    """Figures and pass/fail checks from the metrics, the workers' records and the samples."""
    n, r = args.clients, args.rounds
    warm = max(5, r // 10)
    after_warmup = [rss for _, done, rss in samples if done >= warm and not math.isnan(rss)]
    rss_at_warmup = after_warmup[0] if after_warmup else math.nan
    growth = max(after_warmup) - rss_at_warmup if after_warmup else math.nan
    round_ms = sorted(float(x["round_ms"]) for x in rounds)
    digests = {d for o in outputs for d in o["digests"]}
    checks = {
        "every round once, in order": [x["round"] for x in rounds] == list(range(r)),
        "every round had all clients": all(len(x["participants"]) == n for x in rounds),
        "every client applied every round": all(o["applied"] == [r - 1] for o in outputs)
        and sum(o["clients"] for o in outputs) == n,
        "no client failed or reconnected": all(
            not o["failures"] and o["reconnects"] == 0 for o in outputs
        ),
        "one digest": len(digests) == 1,
        "federator exit 0": federator_code == 0,
        f"RSS growth after warm-up <= {args.max_growth_mb:g} MiB": bool(
            growth <= args.max_growth_mb
        ),
    }
    return {
        "clients": n,
        "rounds": r,
        "nu": args.nu,
        "client_processes": len(outputs),
        "wall_s": round(wall, 1),
        "round_ms_median": round(round_ms[len(round_ms) // 2], 1) if round_ms else None,
        "round_ms_max": round(round_ms[-1], 1) if round_ms else None,
        "federator_rss_mb": {
            "at_warmup": round(rss_at_warmup, 1),
            "max_after_warmup": round(max(after_warmup), 1) if after_warmup else None,
            "growth": round(growth, 1),
            "samples": [
                (round(t, 1), done, round(m, 1))
                for t, done, m in samples[:: max(1, len(samples) // 50)]
            ],
        },
        "worker_rss_mb": [o["rss_mb"] for o in outputs],
        "failures": [f for o in outputs for f in o["failures"]][:5],
        "checks": checks,
        "ok": all(checks.values()),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--per-process", type=int, default=250, help="client sessions per process")
    p.add_argument("--nu", type=int, default=8, help="scalars per update")
    p.add_argument("--round-timeout", type=float, default=60.0)
    p.add_argument("--max-growth-mb", type=float, default=32.0)
    p.add_argument("--timeout", type=float, default=3600.0, help="give up after this many s")
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        import uvloop

        print(json.dumps(uvloop.run(run_worker(args.target, args.first, args.count))))
        return 0
    result = soak(args)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    rss = result["federator_rss_mb"]
    print(
        f"{result['clients']} clients x {result['rounds']} rounds (nu={result['nu']}, "
        f"{result['client_processes']} client processes): {result['wall_s']} s, round median "
        f"{result['round_ms_median']} ms, max {result['round_ms_max']} ms; federator RSS "
        f"{rss['at_warmup']} MiB after warm-up, max {rss['max_after_warmup']} MiB "
        f"(+{rss['growth']}); client processes {result['worker_rss_mb']} MiB"
    )
    for check, ok in result["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    for failure in result["failures"]:
        print(f"  failure: {failure}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
