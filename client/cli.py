"""``cyber0-client``: a client daemon (honest, Byzantine or observer) for one federator.

Prints one JSON line per identity when it is done (``client``, ``applied_round``, ``digest``,
``reconnects``, ``weights`` with ``--save-model``, and on Linux ``wire``: the TCP payload bytes
the daemon sent and received on its connections to the federator, all its identities together,
from the kernel's counters) and exits 0; exits 2 on a usage error and
1 when a session fails or the weights cannot be written. SIGTERM or SIGINT stops it: once no
computation is running it writes ``--save-model`` for its last applied round and exits with
128 + the signal's number (143, 130).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cyber0 import add_log_level_option, add_version_option, wire
from cyber0.common.aggregators import get_aggregator
from cyber0.common.allocator import keep_freed_memory
from cyber0.common.attacks import get_attack_against
from cyber0.common.config import for_identity
from cyber0.common.localdata import check_data_path
from cyber0.common.perturbation import DEFAULT_CACHE_BYTES
from cyber0.wire import PROTOCOL_VERSION

from .session import (
    DEFAULT_KEEPALIVE,
    Backoff,
    ChannelFactory,
    LocalModel,
    Role,
    Session,
    SessionConfig,
    SessionError,
    SessionResult,
    TLSFiles,
    channel_factory,
)
from .traffic import WireTally
from .trainer import ColludingTrainer, ZOTrainer, resolve_device


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="cyber0-client", description=__doc__.splitlines()[0])
    add_version_option(p, PROTOCOL_VERSION)
    p.add_argument("--target", default="127.0.0.1:50051", help="federator HOST:PORT")
    p.add_argument(
        "--id",
        dest="ids",
        action="append",
        required=True,
        help="client id; a Byzantine daemon may repeat it to hold several identities",
    )
    p.add_argument("--token", default="", help="the identity's token (same for all --id)")
    p.add_argument(
        "--token-file", metavar="FILE", help="read the token from FILE ({id}: the identity)"
    )
    p.add_argument("--tls-ca", metavar="PEM", help="CA of the federator's certificate (TLS)")
    p.add_argument(
        "--tls-cert", metavar="PEM", help="client certificate for mutual TLS ({id}: the identity)"
    )
    p.add_argument("--tls-key", metavar="PEM", help="its private key ({id}: the identity)")
    p.add_argument("--tls-server-name", help="name to check in the federator's certificate")
    p.add_argument(
        "--keepalive", type=float, default=DEFAULT_KEEPALIVE, help="seconds between pings (20)"
    )
    p.add_argument(
        "--max-backoff", type=float, default=Backoff().maximum, help="longest reconnect wait (10)"
    )
    p.add_argument("--role", choices=("honest", "byzantine", "observer"), default="honest")
    p.add_argument("--attack", default="alie", help="Byzantine attack (engine registry name)")
    p.add_argument(
        "--attack-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attack parameter (numbers are parsed), e.g. tau=1.5",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    p.add_argument(
        "--data",
        metavar="FILE",
        help="this party's own examples, for a plan whose dataset is local (.csv, .tsv or "
        ".jsonl with text and label for text models; .npz with x and y otherwise); an "
        "observer evaluates on it ({id}: the identity)",
    )
    p.add_argument(
        "--direction-cache",
        type=float,
        default=DEFAULT_CACHE_BYTES / 2**20,
        metavar="MIB",
        help="MiB of a round's directions kept for the update (transformers: from the first "
        "forward; small models: the direction matrix); 0: regenerate them, same results",
    )
    p.add_argument("--eval-every", type=int, default=10, help="observer: report every E rounds")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per unary call")
    p.add_argument("--max-retries", type=int, default=None, help="give up after N failed tries")
    p.add_argument(
        "--save-model",
        metavar="FILE",
        help="when training ends, write the final model's weights to FILE (safetensors)",
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        metavar="N",
        help="also write FILE after every N-th round (a checkpoint for --resume)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="if FILE exists, start from the model it holds (same plan only) instead of "
        "replaying every round",
    )
    add_log_level_option(p, "WARNING")
    return p


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--attack-param needs KEY=VALUE; got {item!r}")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        params[key] = value
    return params


def _channel_factory(args: argparse.Namespace, client_id: str) -> ChannelFactory:
    if args.tls_ca is None:
        if args.tls_cert or args.tls_key or args.tls_server_name:
            raise ValueError("--tls-cert, --tls-key and --tls-server-name need --tls-ca")
        return channel_factory(None, args.keepalive)
    tls = TLSFiles(
        args.tls_ca,
        for_identity(args.tls_cert, client_id),
        for_identity(args.tls_key, client_id),
        args.tls_server_name,
    )
    try:
        return channel_factory(tls, args.keepalive)
    except OSError as exc:
        raise ValueError(f"cannot read the TLS files of {client_id}: {exc}") from exc


def _token(args: argparse.Namespace, client_id: str) -> str:
    path = for_identity(args.token_file, client_id)
    if path is None:
        return str(args.token)
    try:
        with open(path) as token_file:
            return token_file.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the token of {client_id}: {exc}") from exc


def build_trainer(args: argparse.Namespace) -> ZOTrainer:
    """The daemon's one model: a :class:`ColludingTrainer` for ``--role byzantine``."""
    device = resolve_device(args.device)
    if not 0 <= args.direction_cache < math.inf:
        raise ValueError(
            f"--direction-cache must be finite and >= 0 (MiB); got {args.direction_cache}"
        )
    for client_id in args.ids:
        data = for_identity(args.data, client_id)
        if data is not None:
            check_data_path(data)
    options = {
        "data": args.data,
        "checkpoint": args.save_model,
        "save_every": args.save_every,
        "resume": args.resume,
        "cache_bytes": int(args.direction_cache * 2**20),
    }
    if args.role == "byzantine":
        params = _parse_params(args.attack_param)
        # Checked now against a stand-in rule; the trainer builds it against the plan's rule.
        kind = get_attack_against(args.attack, get_aggregator("mean"), **params).kind
        return ColludingTrainer(
            device=device,
            flip_labels=kind == "data",
            attack=args.attack,
            attack_params=params,
            **options,
        )
    return ZOTrainer(device=device, **options)


def _check_saving(args: argparse.Namespace) -> None:
    """Refuse, before any training, a ``--save-model`` file that could not be written and
    ``--save-every``/``--resume`` without one."""
    path: str | None = args.save_model
    if args.save_every < 0:
        raise ValueError(f"--save-every must be >= 0; got {args.save_every}")
    if path is None:
        if args.save_every or args.resume:
            raise ValueError("--save-every and --resume need --save-model FILE")
        return
    folder = Path(path).resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"--save-model {path}: the folder {folder} does not exist or is read-only")
    if Path(path).is_dir():
        raise ValueError(f"--save-model {path}: is a folder; give a file name")


def _check_connection(args: argparse.Namespace) -> None:
    """Refuse connection settings that would make every call fail or the reconnects spin:
    ``--timeout`` and ``--max-backoff`` not above 0, ``--keepalive`` under 1 second (any of
    them not finite), ``--max-retries`` under 0."""
    if not 0 < args.timeout < math.inf:
        raise ValueError(f"--timeout must be > 0 seconds; got {args.timeout}")
    if not 0 < args.max_backoff < math.inf:
        raise ValueError(f"--max-backoff must be > 0 seconds; got {args.max_backoff}")
    if not 1 <= args.keepalive < math.inf:
        raise ValueError(f"--keepalive must be >= 1 second; got {args.keepalive}")
    if args.max_retries is not None and args.max_retries < 0:
        raise ValueError(f"--max-retries must be >= 0; got {args.max_retries}")
    if args.eval_every < 1:
        raise ValueError(f"--eval-every must be >= 1; got {args.eval_every}")


def build_sessions(
    args: argparse.Namespace, trainer: ZOTrainer | None = None, tally: WireTally | None = None
) -> list[Session]:
    """One session per identity, sharing one model (``trainer``, default :func:`build_trainer`)
    and reading ``tally``'s counters at their last round and before each of their connections
    closes (``Session(read_counters=...)``); ValueError on a bad combination or an unreadable TLS
    or token file."""
    if args.role != "byzantine" and len(args.ids) != 1:
        raise ValueError(f"--role {args.role} takes exactly one --id; got {len(args.ids)}")
    if args.token and args.token_file:
        raise ValueError("give --token or --token-file, not both")
    if (args.token or args.token_file) and args.tls_ca is None:
        host = wire.target_host(args.target)
        if not wire.is_loopback(host):
            raise ValueError(
                f"--target {args.target}: without --tls-ca the token would cross the network "
                "in plaintext; give --tls-ca (the federator's CA)"
            )
    _check_connection(args)
    _check_saving(args)
    if trainer is None:
        trainer = build_trainer(args)
    model = LocalModel(trainer)
    role: Role = "observer" if args.role == "observer" else "train"
    return [
        Session(
            SessionConfig(
                target=args.target,
                client_id=client_id,
                token=_token(args, client_id),
                role=role,
                call_timeout=args.timeout,
                eval_every=args.eval_every,
                backoff=Backoff(maximum=args.max_backoff),
                max_retries=args.max_retries,
            ),
            model,
            evaluate=trainer.evaluate if role == "observer" else None,
            channel_factory=_channel_factory(args, client_id),
            read_counters=tally.sample if tally is not None else None,
        )
        for client_id in args.ids
    ]


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run(
    sessions: Sequence[Session], tally: WireTally | None = None
) -> list[SessionResult] | signal.Signals:
    """Run every identity's session concurrently until all are done, ``tally`` counting
    their bytes on the wire meanwhile. On SIGTERM or SIGINT, stop them, wait until no trainer
    call is running (the weights are the global model of the last applied round again) and
    return the signal."""
    loop = asyncio.get_running_loop()
    if tally is not None:
        tally.start()
    everyone = asyncio.ensure_future(asyncio.gather(*(s.run() for s in sessions)))
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        received.append(sig)
        everyone.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        return list(await everyone)
    except asyncio.CancelledError:
        if not received:
            raise
        for model in {id(s.model): s.model for s in sessions}.values():
            await model.idle()
        return received[0]
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        if tally is not None:
            tally.stop()


def _save(args: argparse.Namespace, trainer: ZOTrainer) -> bool:
    """Write ``--save-model`` for the last applied round; False, with the reason on stderr,
    when the file cannot be written."""
    try:
        trainer.save_checkpoint()
    except OSError as exc:
        print(f"cyber0-client: --save-model {args.save_model}: {exc}", file=sys.stderr)
        return False
    return True


def _stopped(args: argparse.Namespace, trainer: ZOTrainer, sig: signal.Signals) -> int:
    """After a stop signal: ``--save-model`` written for the last applied round, if any, and
    the exit status 128 + the signal's number (1 when the file cannot be written)."""
    saved = ""
    if args.save_model and trainer.applied_round >= 0:
        if not _save(args, trainer):
            return 1
        saved = f"; the model of round {trainer.applied_round} is in {args.save_model}"
    print(f"cyber0-client: stopped by {sig.name}{saved}", file=sys.stderr)
    return 128 + int(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    keep_freed_memory()
    tally = WireTally.for_target(args.target)
    try:
        trainer = build_trainer(args)
        sessions = build_sessions(args, trainer, tally)
    except ValueError as exc:
        print(f"cyber0-client: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        outcome = uvloop.run(run(sessions, tally))
    except SessionError as exc:
        print(f"cyber0-client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the handlers were installed
        return 130
    if isinstance(outcome, signal.Signals):
        return _stopped(args, trainer, outcome)
    results = outcome
    saved: dict[str, Any] = {"weights": args.save_model} if args.save_model else {}
    if tally is not None:
        tally.sample()
        wire = tally.report(trainer.rounds_applied)
        if wire is not None:
            saved["wire"] = wire
    if args.save_model and not _save(args, trainer):
        return 1
    for result in results:
        print(
            json.dumps(
                {
                    "client": result.client_id,
                    "applied_round": result.applied_round,
                    "digest": result.digest,
                    "reconnects": result.reconnects,
                    **saved,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
