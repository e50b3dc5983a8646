"""Throwaway TLS for the sandbox's voice and stream websockets (``open_sandbox(..., tls=True)``).

Standard client libraries hard-code ``wss://{endpoint}`` for voice (discord.py: ``wss://{endpoint}/?v=8``),
so the sandbox can serve its media websockets over TLS. At startup we mint a private CA and one server
certificate for ``127.0.0.1`` and ``localhost`` (ECDSA P-256, valid for a day), write them to a fresh
temporary directory, and delete it on exit. Nothing here is ever committed or reused: a client trusts
the sandbox by loading ``ca_file`` (``sb.info()["ca_file"]``), e.g.
``ssl.create_default_context(cafile=ca_file)`` or ``SSL_CERT_FILE=ca_file``.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clank.errors import SandboxError

DEFAULT_HOSTS: Final = ("127.0.0.1", "localhost")
VALIDITY: Final = datetime.timedelta(days=1)
CLOCK_SKEW: Final = datetime.timedelta(hours=1)
"""Certificates start this long before now, so a client with a slightly slow clock still accepts them."""
CA_NAME: Final = "clank sandbox throwaway CA"


@attrs.frozen
class SandboxTls:
    """Paths of the minted PEM files (they live only while :func:`open_sandbox_tls` is open)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    hosts: tuple[str, ...]

    def server_context(self) -> ssl.SSLContext:
        """What the sandbox's websocket servers serve with."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the sandbox CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _mint(hosts: Sequence[str], now: datetime.datetime) -> tuple[bytes, bytes, bytes]:
    """``(ca_pem, server_cert_pem, server_key_pem)`` for ``hosts``."""
    not_before, not_after = now - CLOCK_SKEW, now + VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = _name(CA_NAME)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_subject_alt_names(hosts), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return (
        ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert.public_bytes(serialization.Encoding.PEM),
        key_pem,
    )


@contextmanager
def open_sandbox_tls(hosts: Sequence[str] = DEFAULT_HOSTS) -> Iterator[SandboxTls]:
    """Mint a CA + server certificate into a private temporary directory, removed on exit."""
    if not hosts:
        raise SandboxError("at least one host name or address is needed for the certificate")
    ca_pem, cert_pem, key_pem = _mint(hosts, datetime.datetime.now(datetime.UTC))
    with tempfile.TemporaryDirectory(prefix="clank-sandbox-tls-") as directory:
        root = Path(directory)
        tls = SandboxTls(
            ca_file=root / "ca.pem",
            cert_file=root / "server.pem",
            key_file=root / "server.key",
            hosts=tuple(hosts),
        )
        tls.ca_file.write_bytes(ca_pem)
        tls.cert_file.write_bytes(cert_pem)
        tls.key_file.touch(mode=0o600)
        tls.key_file.write_bytes(key_pem)
        yield tls
