"""The container image that scripts/build-image built (scripts/test runs it with --save), and
the static binary in it.

Containers cannot be run on the test machine (podman builds images, but starting one fails on
rlimits), so the image is read from its saved archive, and the very binary it carries is run
here: static, serving, answering its own HEALTHCHECK.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

import harness as h
from deploy_support import DEPLOY, target_dir

IMAGE_ARCHIVE_NAME = "s3-balance-image.tar"


def image_archive() -> Path:
    path = Path(os.environ.get("S3_BALANCE_IMAGE_ARCHIVE") or target_dir() / "image-context" / IMAGE_ARCHIVE_NAME)
    if not path.exists():
        message = f"image archive {path} not found (scripts/build-image --save {path})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def read_image(path: Path) -> tuple[dict, dict[str, tarfile.TarInfo], dict[str, bytes]]:
    """(image config, path -> entry of the flattened layers, path -> file bytes)."""
    with tarfile.open(path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        assert len(manifest) == 1, manifest
        config = json.load(archive.extractfile(manifest[0]["Config"]))
        entries: dict[str, tarfile.TarInfo] = {}
        files: dict[str, bytes] = {}
        for layer_name in manifest[0]["Layers"]:
            layer = tarfile.open(fileobj=io.BytesIO(archive.extractfile(layer_name).read()))
            for member in layer.getmembers():
                name = "/" + member.name.lstrip("./").rstrip("/")
                entries[name] = member
                if member.isfile():
                    files[name] = layer.extractfile(member).read()
    return config, entries, files


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_binary_is_static(static_binary):
    headers = subprocess.run(["readelf", "-lh", str(static_binary)], capture_output=True, text=True, check=True).stdout
    assert "Requesting program interpreter" not in headers, "dynamically linked: a scratch image has no ld.so"
    assert "Advanced Micro Devices X86-64" in headers
    dynamic = subprocess.run(["readelf", "-d", str(static_binary)], capture_output=True, text=True).stdout
    assert "NEEDED" not in dynamic, dynamic


def test_image_carries_the_tested_binary_and_runs_it_as_documented(static_binary):
    config, entries, files = read_image(image_archive())
    c = config["config"]
    assert c["User"] == "10001:10001"
    assert c["Entrypoint"] == ["/usr/local/bin/s3-balance"]
    assert c["Cmd"] == ["serve", "--config", "/etc/s3-balance/config.yaml"]
    assert c["WorkingDir"] == "/var/lib/s3-balance"
    assert "8080/tcp" in c["ExposedPorts"]
    assert "/var/lib/s3-balance" in c["Volumes"]
    assert c.get("StopSignal") == "SIGTERM"
    health = c["Healthcheck"]
    assert health["Test"] == ["CMD", "/usr/local/bin/s3-balance", "healthcheck"]
    assert health["Interval"] > 0 and health["Timeout"] > 0 and health["Retries"] >= 1

    # Exactly the binary the other tests of this directory run.
    assert sha256(files["/usr/local/bin/s3-balance"]) == sha256(static_binary.read_bytes())
    assert entries["/usr/local/bin/s3-balance"].mode & 0o111
    # FROM scratch: the binary, the CA bundle and the data directory, nothing else.
    assert files["/etc/ssl/certs/ca-certificates.crt"].startswith(b"-----BEGIN CERTIFICATE-----")
    assert set(files) == {"/usr/local/bin/s3-balance", "/etc/ssl/certs/ca-certificates.crt"}
    data = entries["/var/lib/s3-balance"]
    assert data.isdir() and (data.uid, data.gid) == (10001, 10001)
    # Nothing else belongs to the user: the root file system stays root's.
    others = {name for name, e in entries.items() if e.uid != 0 and name != "/var/lib/s3-balance"}
    assert others == set(), others


def test_healthcheck_subcommand_of_the_image_binary(logs, moto1, static_binary, monkeypatch):
    monkeypatch.setenv("S3_BALANCE_BIN", str(static_binary))
    b = h.Backend("i1", moto1, "image-one")
    moto1.create_bucket(b.bucket)
    gw = h.Gateway(logs / "gateway-image", [b], [h.VBucket("img", [b])], {"probe_timeout": "5s", "fall": 3})
    try:
        gw.start()
        ok = subprocess.run(
            [str(static_binary), "healthcheck", "--url", f"{gw.endpoint}/health"], capture_output=True, text=True, timeout=30
        )
        assert ok.returncode == 0, ok.stderr
        gw.client().put_object(Bucket="img", Key="k", Body=b"from the image's binary")
        assert gw.client().get_object(Bucket="img", Key="k")["Body"].read() == b"from the image's binary"
        # A path that is not /health (answers 404 or 403): unhealthy.
        bad = subprocess.run(
            [str(static_binary), "healthcheck", "--url", f"{gw.endpoint}/img/missing"], capture_output=True, text=True, timeout=30
        )
        assert bad.returncode == 1 and "unhealthy" in bad.stderr
    finally:
        assert gw.stop() == 0
    down = subprocess.run(
        [str(static_binary), "healthcheck", "--url", f"{gw.endpoint}/health", "--timeout", "2"],
        capture_output=True, text=True, timeout=30,
    )
    assert down.returncode == 1 and "unhealthy" in down.stderr


def final_stage(dockerfile: Path) -> list[str]:
    """The instructions after the last FROM, continuation lines joined, comments dropped,
    with Dockerfile.source's `--from=build /context/` paths written as build-context paths."""
    text = dockerfile.read_text().replace("\\\n", " ")
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return [line.replace("--from=build ", "").replace("/context/", "") for line in lines[last_from:]]


def test_the_source_dockerfile_builds_the_same_final_image():
    built = final_stage(DEPLOY / "container" / "Dockerfile")
    assert built[0] == "FROM scratch"
    assert final_stage(DEPLOY / "container" / "Dockerfile.source") == built
