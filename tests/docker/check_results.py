"""Checks of a finished Compose run, from its mounted results folder (run inside the image).

Usage: python check_results.py RESULTS --rounds R --nu NU --local-steps K --honest H
       --byzantine B --attack NAME --bar ACCURACY [--compose-log FILE] [--expect-digest HEX]

Prints one line per check and exits 1 if any fails:
  rounds      every round 0..R-1 closed once, with all H+B training clients and nothing rejected
  accuracy    the observer's last report is for round R-1 and its test accuracy is >= the bar
  byzantine   byzantine-1..B took part in every round, their daemon ran --role byzantine with the
              attack (its log line), and it ended like the others
  payload     each round's uplink payload is exactly participants x ByteSize(ClientMessage with an
              Update of K*NU floats), computed with the protocol's own protobuf classes
  wire        every round line has the federator's kernel TCP counts (--wire-metrics), over one
              connection per party in most rounds, and up to each round they hold at least the
              updates' payload plus each message's gRPC prefix and DATA frame header (TLS adds
              its records on top)
  own wire    every daemon's final line counts its own bytes on the wire (its kernel's
              counters), up at least its identities' updates with their framing
  client wire the federator's counts split by the client that authenticated on each connection
              name every party, and each daemon's own counts lie within CLIENT_WIRE_SLACK bytes
              an identity of what the federator counted for its identities
  digests     every party (H + B + observer) reported a digest after round R-1 and all are equal;
              each daemon's own final line (results/clients/*.json) says the same
  weights     the observer's saved model (results/observer.safetensors), rebuilt by load_model
              from its metadata, is the model of round R-1 with that same digest
  same model  (with --expect-digest HEX) that digest is HEX: another run's final model
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from cyber0.common.models import model_digest
from cyber0.common.weights import WeightsError, load_model
from cyber0.v1 import federation_pb2 as pb

GRPC_FRAMING = 5 + 9
"""Bytes a gRPC message costs on HTTP/2 at the least: its 5-byte prefix, a DATA frame's
9-byte header."""


CLIENT_WIRE_SLACK = 2048
"""How far, each way, a daemon's own count of an identity's bytes may lie from the federator's.
Above: what crosses after the federator's last sample (the last aggregate, the reports, the
end of the stream and of TLS), measured at most 0.3 KB up and 0.5 KB down an identity. Below:
a segment the sender sent twice (a retransmission counts again at the sender, once at the
receiver), or what reached a daemon in the last second of a connection that closed before its
next sample (a daemon samples its counters every second); seen once, 0.2 KB down to the
observer of the text stack under CI load."""


def update_bytes(round_index: int, m: int) -> int:
    """Protobuf payload of one client's update in ``round_index``: m float32 values."""
    return pb.ClientMessage(update=pb.Update(round=round_index, values=[0.5] * m)).ByteSize()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("results", type=Path)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--nu", type=int, required=True)
    p.add_argument("--local-steps", type=int, required=True)
    p.add_argument("--honest", type=int, required=True)
    p.add_argument("--byzantine", type=int, required=True)
    p.add_argument("--attack", required=True)
    p.add_argument("--bar", type=float, required=True)
    p.add_argument("--compose-log", type=Path)
    p.add_argument("--expect-digest", default="", help="the final model's digest, in full")
    args = p.parse_args(argv)

    failures: list[str] = []

    def check(name: str, ok: bool, detail: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        if not ok:
            failures.append(name)

    records: list[dict[str, Any]] = [
        json.loads(line) for line in (args.results / "metrics.jsonl").read_text().splitlines()
    ]
    rounds = [r for r in records if r["event"] == "round"]
    reports = [r for r in records if r["event"] == "report"]
    honest = {f"honest-{i}" for i in range(1, args.honest + 1)}
    byzantine = {f"byzantine-{i}" for i in range(1, args.byzantine + 1)}
    training = honest | byzantine
    last = args.rounds - 1

    indices = [r["round"] for r in rounds]
    incomplete = [r["round"] for r in rounds if set(r["participants"]) != training]
    rejected = [r["round"] for r in rounds if r["rejected"]]
    check(
        "rounds",
        indices == list(range(args.rounds)) and not incomplete and not rejected,
        f"{len(rounds)} rounds closed (expected {args.rounds}); rounds without all "
        f"{len(training)} clients: {incomplete[:10]}; rounds with refusals: {rejected[:10]}",
    )

    observed = [r for r in reports if r["role"] == "observer" and r["accuracy"] is not None]
    final = observed[-1] if observed else None
    check(
        "accuracy",
        final is not None and final["round"] == last and final["accuracy"] >= args.bar,
        "no observer report"
        if final is None
        else f"observer's test accuracy {final['accuracy']:.4f} after round {final['round']} "
        f"(bar {args.bar}); curve: "
        + ", ".join(f"{r['round']}:{r['accuracy']:.3f}" for r in observed),
    )

    missing = [r["round"] for r in rounds if not byzantine <= set(r["participants"])]
    log = args.compose_log.read_text() if args.compose_log else ""
    ids = " ".join(sorted(byzantine, key=lambda i: int(i.rsplit("-", 1)[1])))
    announced = re.search(rf"\[byzantine\] attack {re.escape(args.attack)}\b.* as {ids} ", log)
    check(
        "byzantine",
        bool(rounds) and not missing and announced is not None,
        f"{', '.join(sorted(byzantine))} sent an update in {len(rounds) - len(missing)} of "
        f"{len(rounds)} rounds; daemon log: "
        + (announced.group(0).strip() if announced else f"no '[byzantine] attack {args.attack}'"),
    )

    m = args.nu * args.local_steps
    wrong = [
        r["round"]
        for r in rounds
        if r["uplink_payload_bytes"] != len(r["participants"]) * update_bytes(r["round"], m)
    ]
    per_update = {update_bytes(r["round"], m) for r in rounds}
    check(
        "payload",
        bool(rounds) and not wrong,
        f"K*nu = {m} floats a client a round: {sorted(per_update)} bytes per update "
        f"(4*{m} = {4 * m} of values + framing); rounds that differ: {wrong[:10]}",
    )

    counted = [r for r in rounds if "wire_connections" in r]
    up_wire = up_floor = 0
    short = []
    for r in counted:
        up_wire += r["uplink_wire_bytes"]
        up_floor += r["uplink_payload_bytes"] + len(r["participants"]) * GRPC_FRAMING
        if up_wire < up_floor:
            short.append(r["round"])
    parties_n = args.honest + args.byzantine + 1
    usual = statistics.median(r["wire_connections"] for r in counted) if counted else 0
    check(
        "wire",
        bool(rounds) and len(counted) == len(rounds) and not short and usual == parties_n,
        f"{len(counted)} of {len(rounds)} rounds counted, over {usual} connections "
        f"(median; {parties_n} parties); {up_wire} B up in all against at least {up_floor}; "
        f"rounds short of it: {short[:10]}",
    )

    final_digests = {r["client"]: r["digest"] for r in reports if r["round"] == last}
    parties = training | {"observer"}
    own: dict[str, tuple[str, int]] = {}
    daemons_short = []
    daemons = {  # each daemon's final lines, one per identity
        path.stem: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for path in sorted((args.results / "clients").glob("*.json"))
    }
    for name, lines in daemons.items():
        for result in lines:
            own[result["client"]] = (result["digest"], result["applied_round"])
        # A daemon's own counters: at least its identities' updates, each with its framing.
        trains = sum(1 for result in lines if result["client"] in training)
        least = trains * sum(update_bytes(r["round"], m) + GRPC_FRAMING for r in rounds)
        wires = [result.get("wire") for result in lines]
        if not lines or any(w is None or w["up"] < least or w["down"] <= 0 for w in wires):
            daemons_short.append(f"{name}: {wires[0] if wires else None} (up >= {least})")
    check(
        "own wire",
        not daemons_short,
        "every daemon's final line counts its bytes on the wire, up at least its updates; "
        f"short: {daemons_short}",
    )
    # the federator's split, added up over the run by its summary (docker/stack.py)
    summary_path = args.results / "summary.json"  # absent: every party is missing below
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    by_client = summary.get("wire_bytes_by_client") or {}
    off = []
    extra = {"up": 0.0, "down": 0.0}  # the most a daemon counted beyond the federator, per identity
    short = {"up": 0.0, "down": 0.0}  # and the most it counted below it
    for name, lines in daemons.items():
        ids = [result["client"] for result in lines]
        wire = lines[0].get("wire") if lines else None
        for part in ("up", "down"):
            mine = sum(by_client.get(c, {}).get(part, 0) for c in ids)
            if wire is None or abs(wire[part] - mine) > CLIENT_WIRE_SLACK * len(ids):
                off.append(f"{name} {part}: own {wire and wire[part]}, federator {mine}")
            elif ids:
                extra[part] = max(extra[part], (wire[part] - mine) / len(ids))
                short[part] = max(short[part], (mine - wire[part]) / len(ids))
    check(
        "client wire",
        set(by_client) == parties and not off,
        f"the federator's counts name {len(by_client)} clients (missing: "
        f"{sorted(parties - set(by_client))}, unknown: {sorted(set(by_client) - parties)}); "
        f"a daemon's own counts exceed the federator's for its identities by at most "
        f"{extra['up']:.0f} B up and {extra['down']:.0f} B down an identity, and fall short "
        f"of them by at most {short['up']:.0f} B up and {short['down']:.0f} B down; "
        f"daemons beyond {CLIENT_WIRE_SLACK} B an identity either way: {off}",
    )

    values = set(final_digests.values()) | {d for d, _ in own.values()}
    check(
        "digests",
        set(final_digests) == parties
        and set(own) == parties
        and all(applied == last for _, applied in own.values())
        and len(values) == 1,
        f"{len(final_digests)} parties reported after round {last} "
        f"(missing: {sorted(parties - set(final_digests))}), {len(own)} daemons' final lines "
        f"(missing: {sorted(parties - set(own))}); distinct digests: "
        + ", ".join(sorted(v[:16] for v in values)),
    )

    if args.expect_digest:
        check(
            "same model",
            values == {args.expect_digest},
            f"the final model is {args.expect_digest[:16]}, the other run's "
            f"(this run: {', '.join(sorted(v[:16] for v in values))})",
        )

    weights = args.results / "observer.safetensors"
    meta: dict[str, str] = {}
    try:
        model, meta = load_model(weights)
        saved, detail = model_digest(model), f"round {meta['round']}, model {meta['model']}"
    except (WeightsError, OSError) as exc:
        saved, detail = "", str(exc)
    check(
        "weights",
        saved in values and len(values) == 1 and meta.get("round") == str(last),
        f"{weights.name} rebuilt with load_model: {detail}, digest {saved[:16]}",
    )

    # The plain closing line CI reads: "checks: N passed, N failed".
    print(f"checks: {6 - len(failures)} passed, {len(failures)} failed", flush=True)
    if failures:
        print(f"failed checks: {', '.join(failures)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
