"""Behind a TLS-intercepting proxy, pip in the image build must trust the proxy's CA: the
host's bundle (``PIP_CERT``/``SSL_CERT_FILE``) reaches the build as a secret, and no layer
of the image it builds holds it."""

from __future__ import annotations

import datetime
import gzip
import io
import json
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inference_devkit.controlplane import images

CA_CHECK_REF = "localhost/inference-operator/inference-operator:ca-check"


def _proxy_ca_pem() -> bytes:
    """A CA of our own, standing for a company proxy's: unique, so finding it is proof."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         f"build proxy CA {uuid.uuid4().hex}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _layer_files(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(path, content) of every regular file in every layer of an OCI archive."""
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        for entry in index["manifests"]:
            manifest = json.load(outer.extractfile(  # type: ignore[arg-type]
                f"blobs/sha256/{entry['digest'].split(':', 1)[1]}"))
            for layer in manifest["layers"]:
                blob = outer.extractfile(f"blobs/sha256/{layer['digest'].split(':', 1)[1]}")
                assert blob is not None
                data = blob.read()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                with tarfile.open(fileobj=io.BytesIO(data)) as layer_tar:
                    for member in layer_tar:
                        if member.isfile():
                            content = layer_tar.extractfile(member)
                            assert content is not None
                            yield member.name, content.read()


def test_the_build_ca_bundle_reaches_pip_but_no_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy_ca = _proxy_ca_pem()
    system = images.host_ca_bundle()
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes((system.read_bytes() if system else b"") + proxy_ca)
    monkeypatch.setenv("PIP_CERT", str(bundle))

    # Every step runs again: a cached pip layer would say nothing about this bundle.
    archive = images.build_project_image(sys.stderr, ref=CA_CHECK_REF, reuse_layers=False)

    marker = proxy_ca.splitlines()[1]  # the first line of the certificate's body
    files = 0
    for path, content in _layer_files(archive):
        files += 1
        assert "secrets/pip-ca" not in path, path
        assert marker not in content, f"the build's CA bundle is in the image at {path}"
    assert files > 1000  # the venv and the base were searched, not an empty archive
