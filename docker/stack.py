"""Helpers the container entrypoint calls (stdlib + cyber0's own dependencies only).

python stack.py config FILE       write the federator's YAML plan from the environment
python stack.py check             exit 2 naming the first knob of the plan that cannot be used
python stack.py enrolment         the training ids, one a line: honest-1..H, byzantine-1..B, then
                                  REMOTE_CLIENTS (split on commas and whitespace)
python stack.py index SERVICE LIMIT
                                  this container's replica number (1..LIMIT) among SERVICE's
python stack.py ids PREFIX COUNT [DAEMON DAEMONS]
                                  identities PREFIX-1..PREFIX-COUNT (those of daemon DAEMON of
                                  DAEMONS, dealt round-robin)
python stack.py health [TARGET]   exit 0 when the federator answers SERVING to gRPC health checking
python stack.py summary DIR       print and write DIR/summary.json from DIR/metrics.jsonl

A knob that cannot be used (ROUNDS=1e3, BYZANTINE_DAEMONS=0 with Byzantine identities) ends the
command with exit status 2 and a message naming it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

SERVICE = "cyber0.v1.Federation"


class KnobError(ValueError):
    """A knob of the environment that cannot be used (the commands exit 2 naming it)."""


def env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value if value else default


def int_knob(name: str, default: int, minimum: int | None = None) -> int:
    """The integer knob ``name`` (``default`` when unset or empty), at least ``minimum``."""
    raw = env(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise KnobError(f"{name} must be an integer; got '{raw}'") from None
    if minimum is not None and value < minimum:
        raise KnobError(f"{name} must be >= {minimum}; got '{raw}'")
    return value


def float_knob(name: str, default: float) -> float:
    """The finite number knob ``name`` (``default`` when unset or empty)."""
    raw = env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise KnobError(f"{name} must be a number; got '{raw}'")
    return value


def byzantine_knobs() -> tuple[int, int]:
    """BYZANTINE_CLIENTS and BYZANTINE_DAEMONS. The identities are dealt round-robin to the
    daemons: identities without a daemon are refused (they would be enrolled, and every round
    would wait ROUND_TIMEOUT for them); daemons beyond the identities hold none and exit 0."""
    clients = int_knob("BYZANTINE_CLIENTS", 2, minimum=0)
    daemons = int_knob("BYZANTINE_DAEMONS", 1, minimum=0)
    if clients > 0 and daemons == 0:
        raise KnobError(
            f"BYZANTINE_DAEMONS=0 runs no daemon for the BYZANTINE_CLIENTS={clients} Byzantine "
            "identities (every round would wait ROUND_TIMEOUT for them): set BYZANTINE_DAEMONS "
            f"to 1..{clients}, or BYZANTINE_CLIENTS=0"
        )
    return clients, daemons


def remote_clients() -> list[str]:
    """REMOTE_CLIENTS, split on commas and whitespace."""
    return env("REMOTE_CLIENTS", "").replace(",", " ").split()


def enrolment() -> list[str]:
    """The training ids in shard order: honest-1..H, byzantine-1..B, then REMOTE_CLIENTS."""
    honest = int_knob("HONEST_CLIENTS", 6, minimum=0)
    byzantine, _ = byzantine_knobs()
    return identities("honest", honest) + identities("byzantine", byzantine) + remote_clients()


def n_clients() -> int:
    """N_CLIENTS, or the stack's own training clients plus the remote ones."""
    if env("N_CLIENTS", ""):
        return int_knob("N_CLIENTS", 0, minimum=1)
    return len(enrolment())


def plan_from_env() -> dict[str, Any]:
    """The training plan and federator settings named by the .env knobs (:class:`KnobError`
    naming the first that cannot be used)."""
    byzantine, _ = byzantine_knobs()
    return {
        "seed": int_knob("SEED", 0, minimum=0),
        "model": env("MODEL", "logreg"),
        "dataset": env("DATASET", "mnist"),
        "partition": env("PARTITION", "dirichlet"),
        "alpha": float_knob("ALPHA", 1.0),
        "loss": env("LOSS", "cross_entropy"),
        "n_clients": n_clients(),
        "f": int_knob("F", byzantine, minimum=0),
        "aggregator": env("AGGREGATOR", "cwtm"),
        "rounds": int_knob("ROUNDS", 300, minimum=1),
        "zo": {
            "nu": int_knob("NU", 64, minimum=1),
            "local_steps": int_knob("LOCAL_STEPS", 1, minimum=1),
            "mu": float_knob("MU", 0.001),
            "lr": float_knob("LR", 0.002),
            "batch_size": int_knob("BATCH_SIZE", 64, minimum=1),
        },
        "federator": {
            "round_timeout": float_knob("ROUND_TIMEOUT", 30),
            "linger": float_knob("LINGER", 60),
        },
    }


def write_config(path: str) -> None:
    import yaml

    plan = plan_from_env()
    Path(path).write_text(yaml.safe_dump(plan, sort_keys=False))
    print(f"plan: {json.dumps(plan)}", flush=True)


def replica_index(service: str, limit: int) -> int:
    """This container's number among the replicas of ``service``: 1, 2, ... up to ``limit``.

    Each replica claims the lowest free number by creating ``RESULTS_DIR/.replicas/SERVICE-N``
    (mkdir is atomic) and writing its hostname (the container id) in it; a restarted container
    finds its own claim again. The federator clears the claims when a fresh federation starts.
    REPLICA_INDEX overrides it all.
    """
    if env("REPLICA_INDEX", ""):
        return int_knob("REPLICA_INDEX", 1, minimum=1)
    claims = Path(env("RESULTS_DIR", "/results")) / ".replicas"
    claims.mkdir(parents=True, exist_ok=True)
    me = socket.gethostname()
    for claim in sorted(claims.glob(f"{service}-*")):
        owner = claim / "owner"
        if owner.exists() and owner.read_text().strip() == me:
            return int(claim.name.rsplit("-", 1)[1])
    for number in range(1, limit + 1):
        claim = claims / f"{service}-{number}"
        try:
            claim.mkdir()
        except FileExistsError:
            continue
        (claim / "owner").write_text(me + "\n")
        return number
    raise SystemExit(
        f"{service}: all {limit} replica numbers are taken (in {claims}); scale the service to "
        "its count in .env, or start a fresh federation (docker compose down -v)"
    )


def identities(prefix: str, count: int, daemon: int = 1, daemons: int = 1) -> list[str]:
    """PREFIX-1..PREFIX-COUNT, those dealt (round-robin) to daemon ``daemon`` of ``daemons``."""
    if daemons < 1 or not 1 <= daemon <= daemons:
        raise KnobError(f"daemon {daemon} of {daemons}: DAEMONS must be >= 1, DAEMON in 1..DAEMONS")
    return [f"{prefix}-{j}" for j in range(1, count + 1) if (j - 1) % daemons == daemon - 1]


def health(target: str) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ca = env("TLS_CA", "")
    if ca:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes(),
            private_key=Path(env("TLS_KEY", "")).read_bytes() if env("TLS_KEY", "") else None,
            certificate_chain=Path(env("TLS_CERT", "")).read_bytes()
            if env("TLS_CERT", "")
            else None,
        )
        options = []
        if env("TLS_SERVER_NAME", ""):
            options.append(("grpc.ssl_target_name_override", env("TLS_SERVER_NAME", "")))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=3)
        except grpc.RpcError as exc:
            print(f"health: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"health: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def summary(folder: str) -> dict[str, Any]:
    """Final figures from the federator's metrics: rounds, observer accuracy, payload, digests."""
    path = Path(folder) / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rounds = [r for r in records if r["event"] == "round"]
    reports = [r for r in records if r["event"] == "report"]
    observer = [r for r in reports if r["role"] == "observer" and r["accuracy"] is not None]
    last_round = rounds[-1]["round"] if rounds else -1
    digests = {r["client"]: r["digest"] for r in reports if r["round"] == last_round}
    participants = sorted({c for r in rounds for c in r["participants"]})
    up = sum(r["uplink_payload_bytes"] for r in rounds)
    sent = sum(len(r["participants"]) for r in rounds)
    counted = [r for r in rounds[1:] if r.get("wire_connections")]  # round 0 holds the joins
    on_wire = {
        part: statistics.median(r[f"{key}_wire_bytes"] / r["wire_connections"] for r in counted)
        for part, key in (("up", "uplink"), ("down", "downlink"))
        if counted
    }
    by_client: dict[str, dict[str, int]] = {}
    for r in rounds:
        for client, split in r.get("wire_by_client", {}).items():
            totals = by_client.setdefault(client, {"up": 0, "down": 0})
            totals["up"] += split["uplink"]
            totals["down"] += split["downlink"]
    result = {
        "rounds": len(rounds),
        "final_accuracy": observer[-1]["accuracy"] if observer else None,
        "final_accuracy_round": observer[-1]["round"] if observer else None,
        "accuracy": [[r["round"], r["accuracy"]] for r in observer],
        "participants": participants,
        "uplink_payload_bytes_per_update": up / sent if sent else None,
        "wire_bytes_per_connection_round": on_wire or None,
        "wire_bytes_by_client": dict(sorted(by_client.items())) or None,
        "final_digests": digests,
        "digests_agree": len(set(digests.values())) == 1,
    }
    (Path(folder) / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    acc = result["final_accuracy"]
    wire = f", on the wire up {on_wire['up']:.0f} B down {on_wire['down']:.0f} B" if on_wire else ""
    print(
        f"summary: {len(rounds)} rounds, observer accuracy "
        f"{'-' if acc is None else f'{acc:.4f}'} (round {result['final_accuracy_round']}), "
        f"{len(digests)} final digests"
        + ("" if not digests else ", all equal" if result["digests_agree"] else ", DIFFERENT")
        + (f"{wire} a connection a round (median)" if wire else ""),
        flush=True,
    )
    return result


def integer(text: str, what: str) -> int:
    """A command's integer argument ``what``."""
    try:
        return int(text)
    except ValueError:
        raise KnobError(f"{what} must be an integer; got '{text}'") from None


def run(command: str, args: list[str]) -> int:
    if command == "config":
        write_config(args[0])
    elif command == "check":
        plan_from_env()
    elif command == "enrolment":
        for client_id in enrolment():
            print(client_id)
    elif command == "index":
        print(replica_index(args[0], integer(args[1], "LIMIT")))
    elif command == "ids":
        names = ("COUNT", "DAEMON", "DAEMONS")
        numbers = [integer(a, name) for a, name in zip(args[1:], names, strict=False)]
        print(" ".join(identities(args[0], *numbers)))
    elif command == "health":
        return health(args[0] if args else env("HEALTH_TARGET", "127.0.0.1:50051"))
    elif command == "summary":
        summary(args[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    try:
        return run(command, args)
    except KnobError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
