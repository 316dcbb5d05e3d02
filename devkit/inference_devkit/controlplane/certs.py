"""TLS material for a throwaway control plane: a CA, the API server's serving
certificate, an admin client certificate and the service-account signing key."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=7)


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_private_key: Path
    sa_public_key: Path
    # Kept so a node (controlplane/node.py) can issue its components' client certificates.
    ca_key: Path | None = None


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    usages: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def write_cert_material(directory: Path, extra_ips: tuple[str, ...] = ()) -> CertPaths:
    """Generate everything the API server and its admin client need, as PEM files.
    ``extra_ips`` go into the serving certificate too (a node's address, the
    ``kubernetes`` Service's cluster IP)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_private_key=directory / "sa.key",
        sa_public_key=directory / "sa.pub",
        ca_key=directory / "ca.key",
    )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("inference-operator-controlplane-ca")
    ca = _cert(ca_name, ca_key.public_key(), ca_name, ca_key, is_ca=True)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = _cert(
        _name("kube-apiserver"), serving_key.public_key(), ca_name, ca_key,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
        ],
    )

    # system:masters is the group RBAC's bootstrap policy binds to cluster-admin.
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _cert(
        _name("admin", "system:masters"), admin_key.public_key(), ca_name, ca_key,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    paths.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.ca_key.write_bytes(_key_pem(ca_key))
    paths.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    paths.serving_key.write_bytes(_key_pem(serving_key))
    paths.admin_cert.write_bytes(admin.public_bytes(serialization.Encoding.PEM))
    paths.admin_key.write_bytes(_key_pem(admin_key))
    paths.sa_private_key.write_bytes(_key_pem(sa_key))
    paths.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for key_path in (paths.serving_key, paths.admin_key, paths.sa_private_key, paths.ca_key):
        key_path.chmod(0o600)
    return paths


def write_client_cert(certs: CertPaths, directory: Path, name: str, common_name: str,
                      organization: str | None = None) -> tuple[Path, Path]:
    """A client certificate from the control plane's CA (RBAC reads the user from CN and
    the group from O); returns (cert, key) paths."""
    assert certs.ca_key is not None, "this control plane's CA key was not kept"
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(
        _name(common_name, organization), key.public_key(), ca.subject, ca_key,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(_key_pem(key))
    return cert_path, key_path
