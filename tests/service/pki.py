"""A throw-away PKI for the service tests: a CA, server and client certs, and an untrusted CA."""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject, issuer, public_key):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2)))


def make_ca(cn: str):
    key = _key()
    cert = (_builder(_name(cn), _name(cn), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca, cn: str, server: bool):
    ca_key, ca_cert = ca
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    b = (_builder(_name(cn), ca_cert.subject, key.public_key())
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def _write(path, key, cert):
    with open(path + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(path + ".pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: str) -> dict:
    """Write the files; return their paths by role."""
    os.makedirs(directory, exist_ok=True)
    ca = make_ca("test oVirt CA")
    rogue = make_ca("rogue CA")
    out = {}
    for role, (key, cert) in {"ca": ca, "server": issue(ca, "localhost", True),
                              "client": issue(ca, "engine", False),
                              "rogue": issue(rogue, "intruder", False)}.items():
        base = os.path.join(directory, role)
        _write(base, key, cert)
        out[role] = (base + ".pem", base + ".key")
    return {"ca": out["ca"][0], "cert": out["server"][0], "key": out["server"][1],
            "client_cert": out["client"][0], "client_key": out["client"][1],
            "rogue_cert": out["rogue"][0], "rogue_key": out["rogue"][1]}
