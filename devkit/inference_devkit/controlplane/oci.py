"""Write a one-layer OCI image archive (an `oci-archive:` for buildah, importable with
`ctr images import`) from a root filesystem tarball, without any registry or engine.
Used for the pause image and for the Debian base image."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def _digest_file(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            sha.update(block)
    return f"sha256:{sha.hexdigest()}", path.stat().st_size


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def write_oci_archive(layer_tar: Path, destination: Path, ref: str,
                      image_config: dict) -> Path:
    """``ref`` like ``localhost/name:tag``; ``image_config`` is the OCI ``config`` object
    (Entrypoint, Cmd, Env, ...). Written to a temporary name, then renamed, so a cache
    never holds half an image."""
    layer_digest, layer_size = _digest_file(layer_tar)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        # buildah checks that history names one entry per layer.
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": "inference-operator controlplane/oci.py"}],
    }, sort_keys=True).encode()
    config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}],
    }, sort_keys=True).encode()
    manifest_digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST, "digest": manifest_digest, "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            # containerd names the imported image from the first, buildah/skopeo the second.
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": tag},
        }],
    }).encode()
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False,
                                     suffix=".partial") as partial:
        with tarfile.open(fileobj=partial, mode="w") as archive:
            _add_bytes(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
            _add_bytes(archive, "index.json", index)
            _add_bytes(archive, f"blobs/sha256/{config_digest[7:]}", config)
            _add_bytes(archive, f"blobs/sha256/{manifest_digest[7:]}", manifest)
            archive.add(str(layer_tar), f"blobs/sha256/{layer_digest[7:]}")
    shutil.move(partial.name, destination)
    return destination


def single_file_layer(source: Path, name: str, destination: Path) -> Path:
    """A layer holding one executable at ``/name`` (owned by root, fixed mtime, so the
    same binary always gives the same digest)."""
    with tarfile.open(destination, "w") as archive:
        info = archive.gettarinfo(str(source), name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        info.mtime = 0
        with source.open("rb") as data:
            archive.addfile(info, data)
    return destination
