"""Who may join: ``cyber0-certs``, mutual TLS, revocation, tokens, enrolment files, one stream per
identity, and a client whose connection died getting back in. Real TLS on 127.0.0.1 sockets.

A TLS handshake the federator rejects (no client certificate, a certificate from another CA, an
expired one) never reaches the application: the federator's TLS layer closes the connection, and
gRPC reports that on the client as UNAVAILABLE ("failed to connect to all addresses"). Refusals
made after the handshake (revoked, another id claimed, not enrolled, a second stream) carry
UNAUTHENTICATED or PERMISSION_DENIED and the federator's message.
"""

from __future__ import annotations

import asyncio
import datetime
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from test_federator import (
    FAST,
    FakeTrainer,
    federation,
    good,
    make_config,
    open_stream,
    read,
    read_metrics,
    run,
)

from cyber0 import wire
from cyber0.client.cli import build_parser as client_parser
from cyber0.client.cli import build_sessions
from cyber0.client.session import Session, SessionConfig, TLSFiles, channel_factory
from cyber0.common.config import ConfigError
from cyber0.server import certs
from cyber0.server.app import Federator
from cyber0.server.cli import build_parser, config_from_args
from cyber0.server.config import FederatorConfig
from cyber0.v1 import federation_pb2 as pb
from cyber0.v1 import federation_pb2_grpc as pb_grpc

ENROLLED = ("good0", "good1", "bad")


@dataclass(frozen=True)
class PKI:
    """A federation's certificate folder plus a foreign CA's, made with the CLI."""

    root: Path
    other: Path

    @property
    def ca(self) -> str:
        return str(self.root / "ca.pem")

    def client(self, client_id: str, root: Path | None = None) -> TLSFiles:
        folder = (root or self.root) / "clients"
        return TLSFiles(self.ca, str(folder / f"{client_id}.pem"), str(folder / f"{client_id}.key"))

    def settings(self) -> dict[str, Any]:
        return {
            "tls_cert": str(self.root / "federator.pem"),
            "tls_key": str(self.root / "federator.key"),
            "tls_client_ca": self.ca,
            "tls_crl": str(self.root / "crl.pem"),
        }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root, other = tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("other-ca")
    assert certs.main(["init", "--out", str(root)]) == 0
    assert (
        certs.main(["server", "--out", str(root), "--host", "localhost", "--ip", "127.0.0.1"]) == 0
    )
    assert certs.main(["client", "--out", str(root), *ENROLLED, "mallory", "revoked"]) == 0
    assert certs.main(["revoke", "--out", str(root), "revoked"]) == 0
    assert certs.main(["init", "--out", str(other), "--name", "Another CA"]) == 0
    assert certs.main(["client", "--out", str(other), "good0"]) == 0
    now = datetime.datetime.now(datetime.UTC)
    key, cert = certs.Authority.load(root).issue_client(
        "expired",
        not_before=now - datetime.timedelta(days=2),
        not_after=now - datetime.timedelta(days=1),
    )
    certs.write_pair(root / "clients", "expired", key, cert)
    return PKI(root, other)


def tls_config(pki: PKI, **overrides: Any) -> FederatorConfig:
    """n = 3 enrolled ids, quorum 2: rounds close as soon as the two good clients answer (the
    deadline, 0.2 s, passes while the intruder tries)."""
    base = dict(n=3, f=0, aggregator="mean", rounds=1, timeout=0.2, quorum=2)
    return make_config(**{**base, "enrolment": list(ENROLLED), **pki.settings(), **overrides})


@asynccontextmanager
async def tls_stub(address: str, files: TLSFiles) -> AsyncIterator[pb_grpc.FederationStub]:
    async with channel_factory(files, keepalive=1.0)(address) as channel:
        yield pb_grpc.FederationStub(channel)


def join_request(client_id: str, token: str = "") -> pb.JoinRequest:
    credentials = pb.Credentials(client_id=client_id, token=token)
    return pb.JoinRequest(
        credentials=credentials, role=pb.ROLE_TRAIN, protocol_version=wire.PROTOCOL_VERSION
    )


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def stream_refusal(stub: pb_grpc.FederationStub, client_id: str) -> grpc.aio.AioRpcError:
    """Open a stream with a Hello claiming ``client_id`` and return how it was refused."""
    call = await open_stream(stub, client_id)
    return await refused(read(call))


Attempt = Callable[[str, PKI], Awaitable[grpc.aio.AioRpcError]]


async def no_certificate(address: str, pki: PKI) -> grpc.aio.AioRpcError:
    async with tls_stub(address, TLSFiles(pki.ca)) as stub:
        return await refused(stub.Join(join_request("bad"), timeout=5))


async def foreign_ca(address: str, pki: PKI) -> grpc.aio.AioRpcError:
    async with tls_stub(address, pki.client("good0", pki.other)) as stub:
        return await refused(stub.Join(join_request("good0"), timeout=5))


async def expired(address: str, pki: PKI) -> grpc.aio.AioRpcError:
    async with tls_stub(address, pki.client("expired")) as stub:
        return await refused(stub.Join(join_request("expired"), timeout=5))


async def server_certificate(address: str, pki: PKI) -> grpc.aio.AioRpcError:
    files = TLSFiles(pki.ca, str(pki.root / "federator.pem"), str(pki.root / "federator.key"))
    async with tls_stub(address, files) as stub:
        return await refused(stub.Join(join_request("bad"), timeout=5))


async def revoked(address: str, pki: PKI) -> grpc.aio.AioRpcError:
    async with tls_stub(address, pki.client("revoked")) as stub:
        return await refused(stub.Join(join_request("revoked"), timeout=5))


async def claims_another_id(address: str, pki: PKI) -> grpc.aio.AioRpcError:
    async with tls_stub(address, pki.client("mallory")) as stub:
        return await refused(stub.Join(join_request("bad"), timeout=5))


async def hello_claims_another_id(address: str, pki: PKI) -> grpc.aio.AioRpcError:
    """A valid, enrolled client joins as itself, then claims good1's id on its stream."""
    async with tls_stub(address, pki.client("bad")) as stub:
        await stub.Join(join_request("bad"), timeout=5)
        return await stream_refusal(stub, "good1")


async def not_enrolled(address: str, pki: PKI) -> grpc.aio.AioRpcError:
    async with tls_stub(address, pki.client("mallory")) as stub:
        return await refused(stub.Join(join_request("mallory"), timeout=5))


async def second_stream(address: str, pki: PKI) -> grpc.aio.AioRpcError:
    """good0's certificate on a second connection while good0's stream is open."""
    async with tls_stub(address, pki.client("good0")) as stub:
        await stub.Join(join_request("good0"), timeout=5)
        return await stream_refusal(stub, "good0")


ATTEMPTS: dict[str, tuple[Attempt, grpc.StatusCode, str]] = {
    "no certificate": (no_certificate, grpc.StatusCode.UNAVAILABLE, "failed to connect"),
    "another CA": (foreign_ca, grpc.StatusCode.UNAVAILABLE, "failed to connect"),
    "expired": (expired, grpc.StatusCode.UNAVAILABLE, "failed to connect"),
    "server certificate": (server_certificate, grpc.StatusCode.UNAVAILABLE, "failed to connect"),
    "revoked": (revoked, grpc.StatusCode.UNAUTHENTICATED, ") is revoked"),
    "claims another id": (
        claims_another_id,
        grpc.StatusCode.PERMISSION_DENIED,
        "claims client_id 'bad' but the certificate identifies 'mallory'",
    ),
    "Hello claims another id": (
        hello_claims_another_id,
        grpc.StatusCode.PERMISSION_DENIED,
        "claims client_id 'good1' but the certificate identifies 'bad'",
    ),
    "not enrolled": (
        not_enrolled,
        grpc.StatusCode.PERMISSION_DENIED,
        "client mallory is not on the enrolment list",
    ),
    "second stream": (
        second_stream,
        grpc.StatusCode.PERMISSION_DENIED,
        "client good0 already has an open stream",
    ),
}


@pytest.mark.parametrize("case", list(ATTEMPTS))
def test_an_intruder_is_refused_and_the_round_goes_on(case: str, pki: PKI, tmp_path: Path) -> None:
    """good0 and good1 hold streams; the intruder's attempt is refused with the case's code and
    message; round 0 then closes with exactly good0 and good1, and nothing from the intruder."""
    attempt, code, text = ATTEMPTS[case]
    metrics = tmp_path / "metrics.jsonl"

    async def main() -> None:
        async with (
            federation(tls_config(pki, metrics=str(metrics))) as fed,
            tls_stub(fed.address, pki.client("good0")) as stub0,
            tls_stub(fed.address, pki.client("good1")) as stub1,
        ):
            calls = []
            for cid, stub in (("good0", stub0), ("good1", stub1)):
                await stub.Join(join_request(cid), timeout=5)
                calls.append(await open_stream(stub, cid))
            error = await attempt(fed.address, pki)
            assert error.code() == code, error.details()
            assert text in (error.details() or ""), error.details()
            for i, call in enumerate(calls):
                assert (await read(call)).round_start.round == 0
                await call.write(good(0, i))
            for call in calls:
                assert (await read(call)).aggregate.round == 0
                call.cancel()

    run(main())
    (line,) = [r for r in read_metrics(metrics) if r["event"] == "round"]
    assert line["participants"] == ["good0", "good1"]
    assert line["rejected"] == []


def test_sessions_train_over_mutual_tls(pki: PKI) -> None:
    """The client daemon's session over mutual TLS: three enrolled identities finish the plan
    with one digest, and each got the shard of its place on the enrolment list."""
    config = tls_config(pki, rounds=3)

    async def main() -> None:
        async with federation(config) as fed:
            trainers = {cid: FakeTrainer(seed=i) for i, cid in enumerate(ENROLLED)}
            sessions = [
                Session(
                    SessionConfig(fed.address, cid, backoff=FAST, max_retries=5),
                    trainer,
                    channel_factory=channel_factory(pki.client(cid)),
                )
                for cid, trainer in trainers.items()
            ]
            results = await asyncio.gather(*(s.run() for s in sessions))
            assert {r.applied_round for r in results} == {2}
            assert len({r.digest for r in results}) == 1
            assert [trainers[cid].shard for cid in ENROLLED] == [0, 1, 2]

    run(main())


def test_revoking_takes_effect_without_a_restart(pki: PKI, tmp_path: Path) -> None:
    """``cyber0-certs revoke`` rewrites crl.pem; the running federator re-reads it and refuses
    the revoked certificate at its next call."""
    root = tmp_path / "pki"
    for args in (["init"], ["server", "--ip", "127.0.0.1"], ["client", "good0"]):
        assert certs.main([args[0], "--out", str(root), *args[1:]]) == 0
    local = PKI(root, pki.other)

    async def main() -> None:
        config = make_config(n=1, f=0, aggregator="mean", rounds=1, **local.settings())
        async with federation(config) as fed, tls_stub(fed.address, local.client("good0")) as stub:
            await stub.Join(join_request("good0"), timeout=5)
            assert certs.main(["revoke", "--out", str(root), "good0"]) == 0
            error = await refused(stub.Join(join_request("good0"), timeout=5))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "is revoked" in (error.details() or "")

    run(main())


class FreezingProxy:
    """A TCP relay on 127.0.0.1 that can stop relaying without closing anything: to the
    federator the client's connection looks alive but answers nothing (a cut cable)."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._frozen = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def freeze(self) -> None:
        self._frozen.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Relay until EOF (then close the other side) or until frozen (then drop what comes
        and keep both sockets open until the proxy closes)."""
        while (data := await source.read(65536)) and not self._frozen.is_set():
            sink.write(data)
            await sink.drain()
        if not self._frozen.is_set():
            sink.close()


def test_a_client_whose_connection_died_gets_back_in_after_keepalive() -> None:
    """One identity, one stream: while c0's stream is alive a second one is refused. When c0's
    connection goes silent (no FIN, no RST), the federator's keepalive (1 s, answer within
    0.5 s) drops it, and c0's new stream is accepted and invited to the open round."""
    config = make_config(n=2, f=0, aggregator="mean", rounds=1, timeout=10.0, keepalive=1.0)

    async def main() -> None:
        async with (
            federation(config) as fed,
            FreezingProxy(fed.port) as proxy,
            grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as far,
        ):
            stub = pb_grpc.FederationStub(far)
            await stub.Join(join_request("c0"), timeout=5)
            first = await open_stream(stub, "c0")
            async with grpc.aio.insecure_channel(fed.address) as near:
                direct = pb_grpc.FederationStub(near)
                await direct.Join(join_request("c1"), timeout=5)
                other = await open_stream(direct, "c1")
                assert (await read(other)).round_start.round == 0
                assert (await read(first)).round_start.round == 0
                error = await stream_refusal(direct, "c0")
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED
                proxy.freeze()
                loop = asyncio.get_running_loop()
                frozen_at = loop.time()
                while True:
                    second = await open_stream(direct, "c0")
                    try:
                        message = await read(second)
                        break
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
                        assert loop.time() - frozen_at < 5.0, "keepalive never fired"
                        await asyncio.sleep(0.1)
                assert message.round_start.round == 0
                assert loop.time() - frozen_at >= 0.5
                for call in (second, other):
                    await call.write(good(0, 0))
                assert (await read(other)).aggregate.round == 0
                assert (await read(second)).aggregate.round == 0
                for call in (first, second, other):
                    call.cancel()

    run(main())


def test_tokens_are_checked_in_constant_time_and_wrong_ones_refused(tmp_path: Path) -> None:
    """``cyber0-certs token`` writes the secrets and the hashes file; a federator given the
    file admits the right token only. Unknown id, wrong and missing token: UNAUTHENTICATED."""
    root = tmp_path / "pki"
    assert certs.main(["token", "--out", str(root), "c0", "c1"]) == 0
    token = (root / "tokens" / "c0.token").read_text().strip()
    assert stat.S_IMODE((root / "tokens" / "c0.token").stat().st_mode) == 0o600
    lines = (root / "tokens.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["c0", "c1"]
    assert token not in "".join(lines)
    config = make_config(n=2, f=0, aggregator="mean", rounds=1, tokens=str(root / "tokens.txt"))

    async def main() -> None:
        async with federation(config) as fed, grpc.aio.insecure_channel(fed.address) as channel:
            stub = pb_grpc.FederationStub(channel)
            answer = await stub.Join(join_request("c0", token), timeout=5)
            assert answer.protocol_version == wire.PROTOCOL_VERSION
            for cid, presented in (("c1", token), ("c0", token + "x"), ("c0", ""), ("eve", token)):
                error = await refused(stub.Join(join_request(cid, presented), timeout=5))
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                assert f"unknown client id or wrong token for {cid!r}" in (error.details() or "")
            hello = pb.ClientMessage(hello=pb.Hello(credentials=pb.Credentials(client_id="c0")))
            call = stub.Train()
            await call.write(hello)
            error = await refused(read(call))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED

    run(main())
    # Regenerating one id's token replaces its line and keeps the other's.
    assert certs.main(["token", "--out", str(root), "c0", "--force"]) == 0
    assert (root / "tokens" / "c0.token").read_text().strip() != token
    assert sorted(line.split()[0] for line in (root / "tokens.txt").read_text().splitlines()) == [
        "c0",
        "c1",
    ]


def test_the_certs_command_lays_out_a_federation(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    assert certs.main(["init", "--out", str(root)]) == 0
    assert certs.main(["init", "--out", str(root)]) == 2  # never replaces a CA by accident
    assert (
        certs.main(["server", "--out", str(root), "--host", "fed.example", "--ip", "10.0.0.1"]) == 0
    )
    assert certs.main(["client", "--out", str(root), "alice"]) == 0
    assert certs.main(["client", "--out", str(root), "bad id"]) == 2
    for key in ("ca.key", "federator.key", "clients/alice.key"):
        assert stat.S_IMODE((root / key).stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((root / "ca.pem").read_bytes())
    alice = x509.load_pem_x509_certificate((root / "clients/alice.pem").read_bytes())
    server = x509.load_pem_x509_certificate((root / "federator.pem").read_bytes())
    assert alice.issuer == ca.subject
    alice.verify_directly_issued_by(ca)
    assert certs.client_id_of(alice) == "alice"
    assert certs.client_id_of(server) is None  # the federator's certificate names no client
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["fed.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    crl = x509.load_pem_x509_crl((root / "crl.pem").read_bytes())
    assert len(crl) == 0
    assert certs.main(["revoke", "--out", str(root), "alice", "alice"]) == 0
    crl = x509.load_pem_x509_crl((root / "crl.pem").read_bytes())
    assert [entry.serial_number for entry in crl] == [alice.serial_number]
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert certs.main(["revoke", "--out", str(root), "nobody"]) == 2


def test_settings_refuse_plaintext_off_loopback_and_unusable_files(
    pki: PKI, tmp_path: Path
) -> None:
    enrolment = tmp_path / "enrolled.txt"
    enrolment.write_text("# training ids, shard = line\ngood0\n\ngood1  # second\nbad\n")
    args = build_parser().parse_args(
        [
            "--clients",
            "3",
            "--byzantine",
            "0",
            "--aggregator",
            "mean",
            "--enrolment",
            str(enrolment),
        ]
    )
    assert config_from_args(args).settings.enrolment == ENROLLED
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0 is not a loopback address"):
        make_config(host="0.0.0.0")
    assert make_config(host="0.0.0.0", insecure=True).settings.insecure
    assert make_config(host="0.0.0.0", **pki.settings()).settings.tls_client_ca == pki.ca
    with pytest.raises(ConfigError, match="tls_crl: needs tls_client_ca"):
        make_config(tls_crl=pki.settings()["tls_crl"])
    mismatched = {**pki.settings(), "tls_key": str(pki.root / "clients" / "bad.key")}

    async def start(config: FederatorConfig) -> None:
        federator = Federator(config)
        try:
            await federator.start()
        finally:
            await federator.stop()

    with pytest.raises(ConfigError, match="does not match"):
        run(start(make_config(**mismatched)))
    foreign_crl = {**pki.settings(), "tls_crl": str(pki.other / "crl.pem")}
    with pytest.raises(ConfigError, match="is not signed by the client CA"):
        run(start(make_config(**foreign_crl)))
    bad_tokens = tmp_path / "tokens.txt"
    bad_tokens.write_text("c0 not-a-hash\n")
    with pytest.raises(ConfigError, match=r"tokens\.txt:1: expected 'ID SHA256HEX'"):
        run(start(make_config(tokens=str(bad_tokens))))


def test_the_client_command_reads_one_token_and_certificate_per_identity(
    pki: PKI, tmp_path: Path
) -> None:
    """``{id}`` in ``--token-file``/``--tls-cert``/``--tls-key`` names each identity's file."""
    assert certs.main(["token", "--out", str(tmp_path), "m1", "m2"]) == 0
    args = ["--role", "byzantine", "--id", "m1", "--id", "m2", "--device", "cpu"]
    tokens = ["--token-file", str(tmp_path / "tokens" / "{id}.token")]
    sessions = build_sessions(client_parser().parse_args([*args, *tokens]))
    for session in sessions:
        secret = (tmp_path / "tokens" / f"{session.config.client_id}.token").read_text().strip()
        assert session.config.token == secret
    tls = ["--tls-ca", pki.ca, "--tls-cert", str(pki.root / "clients" / "{id}.pem")]
    for bad, message in [
        ([*args, "--tls-cert", "x.pem"], "need --tls-ca"),
        ([*args, *tokens, "--token", "t"], "not both"),
        (
            [*args, *tokens, "--target", "fed.example.org:50051"],
            "without --tls-ca the token would cross the network in plaintext",
        ),
        ([*args, *tls], "go together"),
        ([*args, *tls, "--tls-key", str(tmp_path / "{id}.key")], "cannot read the TLS files of m1"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_sessions(client_parser().parse_args(bad))


def test_reissuing_a_certificate_revokes_the_one_it_replaces(tmp_path: Path) -> None:
    """``client --force ID`` revokes the certificate it replaces (it may have leaked, and
    ``revoke`` names only an id's current one); ``revoke`` keeps every earlier entry and refuses
    a missing or foreign list instead of starting a new one; an id given twice to ``client`` or
    ``token`` is refused; ``--days`` is bounded."""
    root, other = tmp_path / "pki", tmp_path / "other"
    for folder in (root, other):
        assert certs.main(["init", "--out", str(folder)]) == 0
    assert certs.main(["client", "--out", str(root), "alice", "bob"]) == 0

    def serial(client_id: str) -> int:
        pem = (root / "clients" / f"{client_id}.pem").read_bytes()
        return x509.load_pem_x509_certificate(pem).serial_number

    def revoked() -> set[int]:
        return set(certs.revoked_serials(certs.load_crl(root / "crl.pem")))

    leaked = serial("alice")
    assert certs.main(["client", "--out", str(root), "alice"]) == 2  # never silently replaced
    assert certs.main(["client", "--out", str(root), "alice", "--force"]) == 0
    assert revoked() == {leaked} and serial("alice") != leaked
    assert certs.main(["revoke", "--out", str(root), "bob"]) == 0
    assert revoked() == {leaked, serial("bob")}
    (root / "crl.pem").rename(tmp_path / "moved.pem")
    assert certs.main(["revoke", "--out", str(root), "alice"]) == 2
    assert not (root / "crl.pem").exists()
    (other / "crl.pem").replace(root / "crl.pem")
    assert certs.main(["revoke", "--out", str(root), "alice"]) == 2
    assert certs.main(["client", "--out", str(root), "carol", "carol"]) == 2
    assert certs.main(["token", "--out", str(root), "dave", "dave"]) == 2
    assert not (root / "clients" / "carol.pem").exists()
    assert not (root / "tokens.txt").exists()
    for days in ("inf", "1e12", "0"):
        with pytest.raises(SystemExit) as exited:
            certs.main(["client", "--out", str(root), "erin", "--days", days])
        assert exited.value.code == 2


def test_a_client_ca_file_must_hold_one_certificate(pki: PKI, tmp_path: Path) -> None:
    """Two CAs in ``tls_client_ca``: gRPC would admit the second's clients, whose revocations
    the federator could not read (it checks the list against the first)."""
    bundle = tmp_path / "two-cas.pem"
    bundle.write_bytes(Path(pki.ca).read_bytes() + (pki.other / "ca.pem").read_bytes())
    config = make_config(**{**pki.settings(), "tls_client_ca": str(bundle)})

    async def start() -> None:
        federator = Federator(config)
        try:
            await federator.start()
        finally:
            await federator.stop()

    with pytest.raises(ConfigError, match=r"tls_client_ca: .*two-cas\.pem holds 2 certificates"):
        run(start())


def test_a_new_token_withdraws_the_old_one_without_a_restart(tmp_path: Path) -> None:
    """The federator re-reads its token file when it changes: after ``token --force c0`` the
    old (leaked) token is refused at the next call and the new one admitted; a file that stops
    parsing refuses everyone (UNAVAILABLE) until it is fixed."""
    root = tmp_path / "pki"
    assert certs.main(["token", "--out", str(root), "c0", "c1"]) == 0
    table = root / "tokens.txt"

    def token() -> str:
        return (root / "tokens" / "c0.token").read_text().strip()

    leaked = token()
    config = make_config(n=2, f=0, aggregator="mean", rounds=1, tokens=str(table))

    async def main() -> None:
        async with federation(config) as fed, grpc.aio.insecure_channel(fed.address) as channel:
            stub = pb_grpc.FederationStub(channel)
            await stub.Join(join_request("c0", leaked), timeout=5)
            assert certs.main(["token", "--out", str(root), "c0", "--force"]) == 0
            error = await refused(stub.Join(join_request("c0", leaked), timeout=5))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.Join(join_request("c0", token()), timeout=5)
            good_table = table.read_text()
            table.write_text("c0 not-a-hash\n")
            error = await refused(stub.Join(join_request("c0", token()), timeout=5))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "cannot read its token file" in (error.details() or "")
            table.write_text(good_table)
            await stub.Join(join_request("c0", token()), timeout=5)

    run(main())
