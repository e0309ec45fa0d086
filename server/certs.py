"""``cyber0-certs``: a small certificate authority for one federation, and its client tokens.

Everything is made with the ``cryptography`` package (ECDSA P-256 keys, SHA-256 signatures);
nothing shells out to openssl. One directory holds a federation's material::

    ca.pem, ca.key                the authority (init); ca.key stays with the operator
    crl.pem                       revocation list signed by the authority (init, revoke)
    federator.pem, federator.key  the federator's certificate (server): EKU serverAuth, SANs
    clients/ID.pem, clients/ID.key  one per client id (client): EKU clientAuth
    tokens.txt                    ``ID SHA256HEX`` lines for ``cyber0-federator --tokens`` (token)
    tokens/ID.token               the secret each client presents (token)

Identity rule: a client certificate names its client id in exactly one subjectAltName URI
``cyber0:client/<ID>``; the subject CN holds the same id for people reading logs, but only the
URI counts. A certificate without that URI (the federator's own, one from another tool)
identifies nobody. Revocation is per certificate (serial number), as in X.509: re-issuing a
certificate for a revoked id (``client --force``) makes that id valid again.

Keys and tokens are written with mode 0600, every file atomically (temporary file + rename), so
a federator re-reading ``crl.pem`` never sees half of it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import os
import secrets
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cyber0 import add_version_option, wire

CLIENT_URI_PREFIX = "cyber0:client/"
"""A client certificate's identity: the subjectAltName URI ``cyber0:client/<ID>``."""

CA_DAYS = 3650.0
LEAF_DAYS = 365.0
CLOCK_SKEW = datetime.timedelta(minutes=5)
"""Certificates are valid from this long before their issue time (clocks differ)."""


class CertError(ValueError):
    """A certificate operation cannot be done; the message says which file or id and why."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


@dataclass(frozen=True)
class Authority:
    """A CA's key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "CYBER-0 federation CA", days: float = CA_DAYS) -> Authority:
        """A new self-signed CA valid for ``days`` days."""
        key = _new_key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_cn(name))
            .issuer_name(_cn(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, directory: Path) -> Authority:
        """The CA stored in ``directory`` (``ca.pem``, ``ca.key``)."""
        try:
            cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
            key = serialization.load_pem_private_key(
                (directory / "ca.key").read_bytes(), password=None
            )
        except (OSError, ValueError) as exc:
            raise CertError(f"cannot load the CA from {directory}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertError(f"{directory / 'ca.key'}: expected an EC private key")
        return cls(key, cert)

    def issue(
        self,
        subject: str,
        sans: Sequence[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A new key and a leaf certificate for it (default validity: now − 5 min … +365 days)."""
        key = _new_key()
        start = not_before or _now() - CLOCK_SKEW
        end = not_after or _now() + datetime.timedelta(days=LEAF_DAYS)
        if end <= start:
            raise CertError(f"validity ends ({end}) before it starts ({start})")
        ca_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_cn(subject))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(ca_key_id, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return key, cert

    def issue_server(
        self, hosts: Sequence[str], ips: Sequence[str] = (), days: float = LEAF_DAYS
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The federator's certificate: DNS SANs ``hosts`` and IP SANs ``ips`` (≥ 1 in all)."""
        try:
            addresses = [ipaddress.ip_address(ip) for ip in ips]
        except ValueError as exc:
            raise CertError(str(exc)) from exc
        if not hosts and not addresses:
            raise CertError("a federator certificate needs at least one --host or --ip")
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
        sans += [x509.IPAddress(a) for a in addresses]
        subject = hosts[0] if hosts else str(addresses[0])
        end = _now() + datetime.timedelta(days=days)
        return self.issue(subject, sans, ExtendedKeyUsageOID.SERVER_AUTH, not_after=end)

    def issue_client(
        self,
        client_id: str,
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A client certificate for ``client_id`` (SAN URI ``cyber0:client/<ID>``, CN = id)."""
        check_client_id(client_id)
        uri = x509.UniformResourceIdentifier(CLIENT_URI_PREFIX + client_id)
        return self.issue(
            client_id,
            [uri],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            not_before=not_before,
            not_after=not_after,
        )

    def crl(self, serials: Iterable[int], days: float = CA_DAYS) -> x509.CertificateRevocationList:
        """A CRL signed by this CA revoking ``serials`` (the federator ignores its next update;
        it is set ``days`` ahead for other tools)."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(now + datetime.timedelta(days=days))
        )
        for serial in sorted(set(serials)):
            entry = (
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self.key, hashes.SHA256())


def check_client_id(client_id: str) -> None:
    """Raise :class:`CertError` unless ``client_id`` is 1–128 characters of [A-Za-z0-9._-]."""
    if not wire.CLIENT_ID_PATTERN.fullmatch(client_id):
        raise CertError(f"client id must be 1..128 characters of [A-Za-z0-9._-]; got {client_id!r}")


def client_id_of(cert: x509.Certificate) -> str | None:
    """The client id a certificate identifies: the ``<ID>`` of its only SAN URI
    ``cyber0:client/<ID>``; None when it has no such URI, several, or an invalid id."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    ids = [
        uri[len(CLIENT_URI_PREFIX) :]
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(CLIENT_URI_PREFIX)
    ]
    if len(ids) != 1 or not wire.CLIENT_ID_PATTERN.fullmatch(ids[0]):
        return None
    return ids[0]


def revoked_serials(crl: x509.CertificateRevocationList) -> frozenset[int]:
    """The serial numbers a CRL revokes."""
    return frozenset(entry.serial_number for entry in crl)


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as ``tokens.txt`` stores it (tokens are 256-bit random)."""
    return hashlib.sha256(token.encode()).hexdigest()


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM bytes of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM bytes of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_file(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (mode 0600 when ``secret``, else 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o600 if secret else 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_pair(
    directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> tuple[Path, Path]:
    """Write ``stem.pem`` and ``stem.key`` under ``directory``; return their paths."""
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    write_file(key_path, key_pem(key), secret=True)
    write_file(cert_path, cert_pem(cert))
    return cert_path, key_path


# ------------------------------------------------------------------------------ commands
def _refuse_overwrite(paths: Sequence[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise CertError(f"{', '.join(existing)} already exist(s); pass --force to replace")


def cmd_init(directory: Path, name: str, days: float, force: bool) -> list[Path]:
    """Create the CA and an empty revocation list."""
    _refuse_overwrite([directory / "ca.pem", directory / "ca.key"], force)
    ca = Authority.create(name, days)
    paths = list(write_pair(directory, "ca", ca.key, ca.cert))
    crl_path = directory / "crl.pem"
    write_file(crl_path, ca.crl(()).public_bytes(serialization.Encoding.PEM))
    return [*paths, crl_path]


def cmd_server(
    directory: Path, hosts: Sequence[str], ips: Sequence[str], days: float, force: bool
) -> list[Path]:
    """Issue the federator's certificate."""
    ca = Authority.load(directory)
    _refuse_overwrite([directory / "federator.pem"], force)
    key, cert = ca.issue_server(hosts, ips, days)
    return list(write_pair(directory, "federator", key, cert))


def _check_ids(ids: Sequence[str]) -> None:
    """Each id well formed and given once."""
    for client_id in ids:
        check_client_id(client_id)
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise CertError(f"{', '.join(repeated)} given more than once")


def _certificate_of(directory: Path, client_id: str) -> x509.Certificate:
    path = directory / "clients" / f"{client_id}.pem"
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CertError(f"cannot read the certificate of {client_id}: {exc}") from exc


def cmd_client(directory: Path, ids: Sequence[str], days: float, force: bool) -> list[Path]:
    """Issue one client certificate per id. Re-issuing (``force``) revokes the certificate it
    replaces, which may have leaked: ``revoke`` can only name an id's current one."""
    ca = Authority.load(directory)
    _check_ids(ids)
    current = [i for i in ids if (directory / "clients" / f"{i}.pem").exists()]
    _refuse_overwrite([directory / "clients" / f"{i}.pem" for i in current], force)
    replaced = {_certificate_of(directory, i).serial_number for i in current}
    paths: list[Path] = []
    if replaced:
        paths.append(_revoke_serials(directory, ca, replaced))
    end = _now() + datetime.timedelta(days=days)
    for client_id in ids:
        key, cert = ca.issue_client(client_id, not_after=end)
        paths += write_pair(directory / "clients", client_id, key, cert)
    return paths


def load_crl(path: Path) -> x509.CertificateRevocationList:
    """The CRL at ``path``."""
    try:
        return x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CertError(f"cannot read the revocation list {path}: {exc}") from exc


def _revoke_serials(directory: Path, ca: Authority, serials: set[int]) -> Path:
    """Add ``serials`` to ``crl.pem``, which must exist and be the CA's (``init`` writes it):
    a list started afresh would forget the earlier revocations."""
    crl_path = directory / "crl.pem"
    if not crl_path.exists():
        raise CertError(
            f"{crl_path} is missing (init writes it); restore it: a new list would forget "
            "every earlier revocation"
        )
    crl = load_crl(crl_path)
    public_key = ca.cert.public_key()
    if crl.issuer != ca.cert.subject or not crl.is_signature_valid(public_key):  # type: ignore[arg-type]
        raise CertError(f"{crl_path} is not signed by this CA ({ca.cert.subject.rfc4514_string()})")
    revoked = set(revoked_serials(crl)) | serials
    write_file(crl_path, ca.crl(revoked).public_bytes(serialization.Encoding.PEM))
    return crl_path


def cmd_revoke(directory: Path, ids: Sequence[str]) -> list[Path]:
    """Add the current certificate of each id to ``crl.pem`` (an id given twice is revoked
    once)."""
    ca = Authority.load(directory)
    _check_ids(sorted(set(ids)))
    serials = {_certificate_of(directory, client_id).serial_number for client_id in ids}
    return [_revoke_serials(directory, ca, serials)]


def cmd_token(directory: Path, ids: Sequence[str], force: bool) -> list[Path]:
    """A new random token per id: the secret in ``tokens/ID.token``, its hash in ``tokens.txt``
    (an existing line for the id is replaced)."""
    _check_ids(ids)
    _refuse_overwrite([directory / "tokens" / f"{i}.token" for i in ids], force)
    table_path = directory / "tokens.txt"
    lines = table_path.read_text().splitlines() if table_path.exists() else []
    replaced = set(ids)
    kept = [line for line in lines if (line.split() or [""])[0] not in replaced]
    paths = []
    for client_id in ids:
        token = secrets.token_urlsafe(32)
        token_path = directory / "tokens" / f"{client_id}.token"
        write_file(token_path, (token + "\n").encode(), secret=True)
        kept.append(f"{client_id} {hash_token(token)}")
        paths.append(token_path)
    write_file(table_path, ("\n".join(kept) + "\n").encode())
    return [table_path, *paths]


MAX_DAYS = 36_500
"""Longest validity ``--days`` takes (100 years; certificates end before the year 9999)."""


def _days(text: str) -> float:
    days = float(text)
    if not 0 < days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_DAYS}]; got {text}")
    return days


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="cyber0-certs", description="Certificates and tokens for a CYBER-0 federation."
    )
    add_version_option(p)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("--out", "--dir", dest="dir", required=True, type=Path, help="PKI folder")
        return c

    init = command("init", "create the CA (ca.pem, ca.key) and an empty crl.pem")
    init.add_argument("--name", default="CYBER-0 federation CA", help="the CA's common name")
    init.add_argument("--days", type=_days, default=CA_DAYS, help="validity in days (3650)")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    server = command("server", "issue the federator's certificate (federator.pem, .key)")
    server.add_argument("--host", action="append", default=[], help="DNS name (repeatable)")
    server.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")
    server.add_argument("--days", type=_days, default=LEAF_DAYS, help="validity in days (365)")
    server.add_argument("--force", action="store_true", help="replace an existing certificate")
    client = command("client", "issue client certificates (clients/ID.pem, clients/ID.key)")
    client.add_argument("ids", nargs="+", metavar="ID")
    client.add_argument("--days", type=_days, default=LEAF_DAYS, help="validity in days (365)")
    client.add_argument(
        "--force", action="store_true", help="re-issue existing certificates (revokes them)"
    )
    revoke = command("revoke", "revoke the current certificate of each ID (updates crl.pem)")
    revoke.add_argument("ids", nargs="+", metavar="ID")
    token = command("token", "make a random token per ID (tokens/ID.token, tokens.txt)")
    token.add_argument("ids", nargs="+", metavar="ID")
    token.add_argument("--force", action="store_true", help="replace existing tokens")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cyber0-certs``: prints the files written; exit 2 on an error."""
    args = build_parser().parse_args(argv)
    directory: Path = args.dir
    try:
        if args.command == "init":
            paths = cmd_init(directory, args.name, args.days, args.force)
        elif args.command == "server":
            paths = cmd_server(directory, args.host, args.ip, args.days, args.force)
        elif args.command == "client":
            paths = cmd_client(directory, args.ids, args.days, args.force)
        elif args.command == "revoke":
            paths = cmd_revoke(directory, args.ids)
        else:
            paths = cmd_token(directory, args.ids, args.force)
    except CertError as exc:
        print(f"cyber0-certs: error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
