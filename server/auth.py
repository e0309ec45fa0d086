"""Who is calling: TLS credentials and the authenticators that map a call to a client id.

* :class:`CertificateIdentity` (mutual TLS): the id is the one in the verified peer
  certificate's subjectAltName URI ``cyber0:client/<ID>`` (see :mod:`cyber0.server.certs`), never
  the message's ``client_id``, which must merely agree with it. gRPC has already checked the chain
  against the client CA and the validity dates during the handshake; this class adds the
  revocation list and an expiry check for connections that outlive their certificate.
* :class:`TokenIdentity`: the claimed id must present its token; the federator keeps only the
  tokens' SHA-256 and compares in constant time.
* :class:`ClaimedIdentity`: the claimed id on trust (loopback runs and tests).

Every authenticator first checks the credentials' format (INVALID_ARGUMENT). Refusals:
UNAUTHENTICATED when the caller proved no identity (no or a revoked certificate, a wrong token),
PERMISSION_DENIED when it proved one but claims another.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cyber0 import wire
from cyber0.common.config import ConfigError
from cyber0.v1 import federation_pb2 as pb

from .certs import CLIENT_URI_PREFIX, client_id_of, hash_token, revoked_serials
from .config import FederatorSettings
from .errors import Refusal

_log = logging.getLogger("cyber0.federator")
T = TypeVar("T")


class Authenticator(Protocol):
    """Maps a call's credentials (and its transport context) to a verified client id."""

    def authenticate(self, credentials: pb.Credentials, context: grpc.aio.ServicerContext) -> str:
        """The verified client id; raises :class:`Refusal` (UNAUTHENTICATED, PERMISSION_DENIED,
        INVALID_ARGUMENT, UNAVAILABLE) when the caller may not act as anyone."""
        ...


def check_format(credentials: pb.Credentials) -> str:
    """The claimed id if it matches ``[A-Za-z0-9._-]{1,128}`` and the token is bounded."""
    client_id = credentials.client_id
    if not wire.CLIENT_ID_PATTERN.fullmatch(client_id):
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"client_id must be 1..{wire.MAX_CLIENT_ID_CHARS} characters of [A-Za-z0-9._-]; "
            f"got {client_id[: wire.MAX_CLIENT_ID_CHARS]!r}",
        )
    if len(credentials.token) > wire.MAX_TOKEN_CHARS:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"token must be at most {wire.MAX_TOKEN_CHARS} characters; "
            f"got {len(credentials.token)}",
        )
    return client_id


class ClaimedIdentity:
    """Trusts the claimed id (no token check): for loopback runs and tests only."""

    def authenticate(self, credentials: pb.Credentials, context: grpc.aio.ServicerContext) -> str:
        """The claimed id, format checked."""
        return check_format(credentials)


class WatchedFile(Generic[T]):
    """A file the federator reads at start and again whenever its modification time or size
    changes (checked at each :meth:`current`), so an operator's edit takes effect at the next
    call without a restart. ``parse`` turns it into a value (OSError or ValueError when it
    cannot). At start that error propagates (the caller names the setting); later it refuses
    everyone with UNAVAILABLE until the file is fixed: the check fails closed."""

    def __init__(self, path: Path, what: str, parse: Callable[[Path], T]) -> None:
        self.path = path
        self._what = what
        self._parse = parse
        self._stamp: tuple[int, int] | None = None
        self._value = self._reload()

    def _reload(self) -> T:
        stat = os.stat(self.path)
        value = self._parse(self.path)
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        return value

    def current(self) -> T:
        """The parsed file, re-read if it changed; :class:`Refusal` (UNAVAILABLE) when it
        cannot be read or parsed."""
        try:
            stat = os.stat(self.path)
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self._value = self._reload()
                _log.info("%s %s re-read", self._what, self.path)
        except (OSError, ValueError) as exc:
            _log.error("cannot read the %s: %s", self._what, exc)
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"the federator cannot read its {self._what}; try again later",
            ) from exc
        return self._value


class RevocationList:
    """The serials revoked by a CRL file signed by the client CA, a :class:`WatchedFile`:
    ``cyber0-certs revoke`` takes effect at the revoked client's next call without a restart,
    and a file that cannot be read or is not signed by the CA refuses everyone (UNAVAILABLE)
    until it is fixed (revocation fails closed)."""

    def __init__(self, path: Path, ca: x509.Certificate) -> None:
        self._ca = ca
        self._file = WatchedFile(path, "revocation list", self._serials)

    def _serials(self, path: Path) -> frozenset[int]:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        public_key = self._ca.public_key()
        if crl.issuer != self._ca.subject or not crl.is_signature_valid(public_key):  # type: ignore[arg-type]
            raise ValueError(f"{path} is not signed by the client CA {self._ca.subject}")
        return revoked_serials(crl)

    def is_revoked(self, serial: int) -> bool:
        """Whether ``serial`` is revoked (re-reading the file if it changed)."""
        return serial in self._file.current()


@functools.lru_cache(maxsize=1024)
def _parse_certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


class CertificateIdentity:
    """Mutual TLS: the client id is the verified peer certificate's ``cyber0:client/<ID>``."""

    def __init__(self, revocations: RevocationList | None = None) -> None:
        self._revocations = revocations

    def authenticate(self, credentials: pb.Credentials, context: grpc.aio.ServicerContext) -> str:
        """The certificate's id, if the certificate is not revoked or expired and the message
        claims the same id."""
        claimed = check_format(credentials)
        pems = context.auth_context().get("x509_pem_cert")
        if not pems:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "no verified client certificate: this federator requires mutual TLS",
            )
        cert = _parse_certificate(pems[0])
        client_id = client_id_of(cert)
        serial = f"{cert.serial_number:#x}"
        if client_id is None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the certificate {cert.subject.rfc4514_string()} (serial {serial}) names no "
                f"client: it needs exactly one subjectAltName URI {CLIENT_URI_PREFIX}<ID>",
            )
        if self._revocations is not None and self._revocations.is_revoked(cert.serial_number):
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the certificate of client {client_id} (serial {serial}) is revoked",
            )
        expiry = cert.not_valid_after_utc
        if expiry < datetime.datetime.now(datetime.UTC):
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the certificate of client {client_id} (serial {serial}) expired at {expiry}",
            )
        if claimed != client_id:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the message claims client_id {claimed!r} but the certificate identifies "
                f"{client_id!r}",
            )
        return client_id


class TokenIdentity:
    """Per-client secrets: a file of ``ID SHA256HEX`` lines (``cyber0-certs token`` writes
    them; blank lines and ``#`` comments are ignored), each the hex SHA-256 of the id's token.

    A :class:`WatchedFile`: ``cyber0-certs token --force ID`` withdraws a leaked token at the
    client's next call without a restart. A file that cannot be read or parsed at start is a
    :class:`ConfigError` naming the line; later it refuses everyone (UNAVAILABLE) until fixed.
    """

    _NOBODY = hash_token("")

    def __init__(self, path: str) -> None:
        try:
            self._file = WatchedFile(Path(path), "token file", _read_token_hashes)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"federator.tokens: {exc}") from exc

    def authenticate(self, credentials: pb.Credentials, context: grpc.aio.ServicerContext) -> str:
        """The claimed id if its token's hash matches (compared in constant time; an unknown
        id is compared against a dummy so that timing does not reveal who is enrolled)."""
        client_id = check_format(credentials)
        hashes = self._file.current()
        expected = hashes.get(client_id, self._NOBODY)
        presented = hashlib.sha256(credentials.token.encode()).hexdigest()
        if not hmac.compare_digest(presented, expected) or client_id not in hashes:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"unknown client id or wrong token for {client_id!r}",
            )
        return client_id


def _read_token_hashes(path: Path) -> dict[str, str]:
    """The id → token hash lines of ``path``; ValueError naming the bad line."""
    hashes: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        ok = (
            len(parts) == 2
            and wire.CLIENT_ID_PATTERN.fullmatch(parts[0]) is not None
            and len(parts[1]) == 64
            and all(c in "0123456789abcdef" for c in parts[1])
        )
        if not ok:
            raise ValueError(
                f"{path}:{number}: expected 'ID SHA256HEX' (64 lowercase hex characters)"
            )
        if parts[0] in hashes:
            raise ValueError(f"{path}:{number}: {parts[0]} listed twice")
        hashes[parts[0]] = parts[1]
    return hashes


class AllOf:
    """Every authenticator must accept the call (they all return the claimed id)."""

    def __init__(self, *parts: Authenticator) -> None:
        self._parts = parts

    def authenticate(self, credentials: pb.Credentials, context: grpc.aio.ServicerContext) -> str:
        """The id all parts agree on."""
        ids = {part.authenticate(credentials, context) for part in self._parts}
        (client_id,) = ids
        return client_id


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"federator.{setting}: cannot read {path}: {exc}") from exc


def _certificate(setting: str, path: str) -> x509.Certificate:
    """The one certificate of ``path``. A file holding several is refused: gRPC would trust
    each (a second client CA) while revocation reads the first, so the others' clients could
    never be revoked."""
    try:
        found = x509.load_pem_x509_certificates(_read(setting, path))
    except ValueError as exc:
        raise ConfigError(f"federator.{setting}: {path} is not a PEM certificate: {exc}") from exc
    if len(found) != 1:
        raise ConfigError(
            f"federator.{setting}: {path} holds {len(found)} certificates; give exactly one"
        )
    return found[0]


def server_credentials(settings: FederatorSettings) -> grpc.ServerCredentials | None:
    """TLS credentials for ``settings`` (None: plaintext); mutual TLS when a client CA is set.
    Raises :class:`ConfigError` for unreadable files or a key that does not match the cert."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    cert_bytes = _read("tls_cert", settings.tls_cert)
    key_bytes = _read("tls_key", settings.tls_key)
    cert = _certificate("tls_cert", settings.tls_cert)
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"federator.tls_key: {settings.tls_key} is not an unencrypted PEM private key: {exc}"
        ) from exc
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise ConfigError(
            f"federator.tls_key: {settings.tls_key} does not match {settings.tls_cert}"
        )
    client_ca = None
    if settings.tls_client_ca is not None:
        _certificate("tls_client_ca", settings.tls_client_ca)
        client_ca = _read("tls_client_ca", settings.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(key_bytes, cert_bytes)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def build_authenticator(settings: FederatorSettings) -> Authenticator:
    """The authenticator ``settings`` ask for: certificates when a client CA is set, tokens when
    a token file is set, both when both are, else the claimed id."""
    parts: list[Authenticator] = []
    if settings.tls_client_ca is not None:
        revocations = None
        if settings.tls_crl is not None:
            ca = _certificate("tls_client_ca", settings.tls_client_ca)
            try:
                revocations = RevocationList(Path(settings.tls_crl), ca)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"federator.tls_crl: {exc}") from exc
        parts.append(CertificateIdentity(revocations))
    if settings.tokens is not None:
        parts.append(TokenIdentity(settings.tokens))
    if not parts:
        return ClaimedIdentity()
    return parts[0] if len(parts) == 1 else AllOf(*parts)
