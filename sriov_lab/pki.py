"""A throwaway lab CA, so the engine simulator and the lab services speak real TLS.

One CA can issue the simulator's server certificate, the host services'
server certificates and the adapter's client certificate, which is what
mutual TLS between them needs. Test use only: keys are written unencrypted.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    cert: str
    key: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sriov-lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key, path: str) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(cert, path: str) -> None:
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _san(names) -> x509.SubjectAlternativeName:
    entries = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


class TestCa:
    """A CA in *directory* (``ca.pem``/``ca.key``), created on first use."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: str, name: str = "sriov-lab test CA"):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.cert_path = os.path.join(directory, "ca.pem")
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .sign(self._key, hashes.SHA256())
        )
        _write_cert(self._cert, self.cert_path)
        _write_key(self._key, os.path.join(directory, "ca.key"))

    def issue(self, name: str, sans=("127.0.0.1", "localhost"), client: bool = False) -> Issued:
        """A leaf certificate for *name*: a host one (server and client, as VDSM's
        host certificate is used both ways), or a client-only one."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [
            ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(self._cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if sans:
            builder = builder.add_extension(_san(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(os.path.join(self.dir, "%s.pem" % name), os.path.join(self.dir, "%s.key" % name))
        _write_cert(cert, issued.cert)
        _write_key(key, issued.key)
        return issued
