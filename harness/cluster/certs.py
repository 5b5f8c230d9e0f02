"""Certificates for the test control plane, made fresh at every start (nothing secret is committed).

One CA signs everything: the API server's serving cert, client certs (admin in system:masters, the
controller-manager) and serving certs for webhooks the tests run on 127.0.0.1. EC P-256 keys because
they are generated in microseconds, unlike RSA, and every Kubernetes component accepts them.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=2)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    # A minute of back-dating so a cert is valid immediately even with a little clock skew.
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its key, as PEM files on disk."""

    cert_file: Path
    key_file: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()


@dataclass(frozen=True)
class ServingCert:
    """A webhook serving certificate signed by the cluster CA.

    ``ca_bundle`` is the base64 text to put in a webhook configuration's ``clientConfig.caBundle``.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca_file.read_bytes()).decode("ascii")


class CertificateAuthority:
    """A throw-away CA that writes the certs it issues into one directory."""

    def __init__(self, directory: Path, common_name: str = "candor-test-ca") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now())
            .not_valid_after(_now() + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = directory / "ca.crt"
        self.key_file = directory / "ca.key"
        self.cert_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(_key_pem(self._key))
        self.key_file.chmod(0o600)

    def issue(
        self,
        stem: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
        client: bool = False,
    ) -> KeyPair:
        """Write ``<stem>.crt``/``<stem>.key``. For client certs, CN is the user and O the groups."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now())
            .not_valid_after(_now() + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        pair = KeyPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key_file.write_bytes(_key_pem(key))
        pair.key_file.chmod(0o600)
        return pair

    def serving_cert(self, stem: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> ServingCert:
        """A server cert for ``hosts`` (IP addresses and DNS names), e.g. for a webhook on 127.0.0.1."""
        ips, names = [], []
        for host in hosts:
            try:
                ipaddress.ip_address(host)
                ips.append(host)
            except ValueError:
                names.append(host)
        pair = self.issue(stem, hosts[0], dns_names=tuple(names), ips=tuple(ips), server=True)
        return ServingCert(pair.cert_file, pair.key_file, self.cert_file)


def write_signing_key(directory: Path) -> tuple[Path, Path]:
    """The service-account token signing key pair: (private key file, public key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / "sa.key", directory / "sa.pub"
    private.write_bytes(_key_pem(key))
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public
