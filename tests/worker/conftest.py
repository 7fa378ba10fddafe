"""Harness of the Worker's end-to-end tests: two moto S3 servers as backends, and the built
Worker under `wrangler dev` (local mode: workerd, local KV in a temp dir, no network, no login).

Needs: `scripts/install-worker-tools` and `scripts/build-worker --test-routes` (run here when the bundle is
missing; WORKER_REBUILD=1 forces it). Without the tools every test is skipped with the reason
(fails under CI=true).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import harness as h  # noqa: E402

# The test bundle: the production code plus the `/__test/` routes (scripts/build-worker
# --test-routes); the production bundle in edge-worker/build has no such routes.
SHIM = ROOT / "edge-worker" / "build-test" / "worker" / "shim.mjs"
# The production bundle, as `wrangler deploy` builds it (scripts/build-worker).
PRODUCTION_SHIM = ROOT / "edge-worker" / "build" / "worker" / "shim.mjs"
WRANGLER = ROOT / "scripts" / "wrangler"
ACCESS_KEY = "AKIDWORKERTEST000001"
SECRET_KEY = "worker-test-secret-000001"
# Backend secret: comes from a Worker var through ${MOTO_SECRET} in the config.
MOTO_SECRET = "moto-secret"
# The admin API's bearer token: a Worker secret through ${ADMIN_TOKEN} in the config.
ADMIN_TOKEN = "worker-admin-token"
# Ordinary users (not admin) of the test config.
ALICE = ("AKIDWORKERALICE00001", "worker-alice-secret")
BOB = ("AKIDWORKERBOB0000001", "worker-bob-secret")
# The Worker's body limit in these tests (var S3_BALANCE_MAX_BODY_BYTES; the config sets none).
MAX_BODY = 6_000_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60, proc=None, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log).read_text()[-4000:] if log else ""
            raise RuntimeError(f"process exited ({proc.returncode}) before {url} answered:\n{tail}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.3)
    tail = Path(log).read_text()[-4000:] if log else ""
    raise RuntimeError(f"{url} did not answer in {timeout}s\n{tail}")


def tools_missing():
    if not (ROOT / "edge-worker" / "node_modules" / "wrangler").exists():
        return "wrangler is not installed: run scripts/install-worker-tools"
    if shutil.which("moto_server") is None:
        return "moto_server is not installed (pip install 'moto[server]')"
    return None


@pytest.fixture(scope="session")
def bundle():
    reason = tools_missing()
    if reason:
        h.missing(reason)
    if os.environ.get("WORKER_REBUILD") == "1" or not SHIM.exists():
        subprocess.run([str(ROOT / "scripts" / "build-worker"), "--test-routes"], check=True, cwd=ROOT)
    return SHIM


class Moto:
    def __init__(self, name, port, proc):
        self.name, self.port, self.proc = name, port, proc
        self.endpoint = f"http://127.0.0.1:{port}"
        self.bucket = f"real-{name}"
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key=MOTO_SECRET,
            config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=5),
        )

    def keys(self):
        out = self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return [o["Key"] for o in out]

    def stop(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def motos(tmp_path_factory):
    reason = tools_missing()
    if reason:
        h.missing(reason)
    logs = tmp_path_factory.mktemp("moto")
    servers = []
    for name in ("a", "b"):
        port = free_port()
        log = logs / f"{name}.log"
        proc = subprocess.Popen(
            ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{port}/", proc=proc, log=log)
        m = Moto(name, port, proc)
        m.client.create_bucket(Bucket=m.bucket)
        servers.append(m)
    yield {m.name: m for m in servers}
    for m in servers:
        m.resume()
        m.proc.terminate()
        m.proc.wait(timeout=10)


def config_yaml(motos, strategy="round-robin", extra_bucket=None):
    backends = "".join(
        f"""
  - name: "{m.name}"
    bucket: "{m.bucket}"
    endpoint: "{m.endpoint}"
    region: "us-east-1"
    access_key_id: "test"
    secret_access_key: "${{MOTO_SECRET}}"
    path_style: true
    enabled: true
"""
        for m in motos.values()
    )
    extra = f"""
  - name: "{extra_bucket}"
    virtual: true
""" if extra_bucket else ""
    return f"""# Worker end-to-end test config (generated)
metadata:
  type: memory
buckets:{backends}
  - name: "photos"
    virtual: true
  - name: "public"
    virtual: true
    anonymous_read: true
    reads: auto
{extra}
balancer:
  strategy: "{strategy}"
  rise: 1
  fall: 1
  probe_timeout: 2s
metrics:
  enabled: true
  path: "/metrics"
data_path:
  reads: proxy
  writes: proxy
s3api:
  access_key: "{ACCESS_KEY}"
  secret_key: "{SECRET_KEY}"
  # Two ordinary users beside the owner's key, for bucket ownership (test_worker_access.py).
  credentials:
    - access_key: "{ALICE[0]}"
      secret_key: "{ALICE[1]}"
    - access_key: "{BOB[0]}"
      secret_key: "{BOB[1]}"
  auth_required: true
  # Virtual-host buckets under the base domain, as on a custom domain (`photos.s3.test`); the
  # tests' own 127.0.0.1 host is not under it, so path-style requests stay path style.
  virtual_host: true
  base_domains: ["{h.BASE_DOMAIN}"]
  allow_create_bucket: true
  upload_id_secret: "worker-test-upload-id-secret"
admin:
  token: "${{ADMIN_TOKEN}}"
"""


class Gateway:
    def __init__(self, url, state_dir, workdir, proc, log):
        self.url, self.state_dir, self.workdir, self.proc, self.log = url, state_dir, workdir, proc, log

    def client(self, access_key=ACCESS_KEY, secret_key=SECRET_KEY, **kw):
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            # `kw` may override the defaults (the drill sets its own timeouts).
            config=BotoConfig(**{"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}, "read_timeout": 30, **kw}),
        )

    def wrangler(self, *args, check=True):
        """A wrangler command against this gateway's config and local state."""
        return subprocess.run(
            [str(WRANGLER), *args, "--config", str(self.workdir / "wrangler.toml")],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=check,
            env={**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "1"},
        )

    def log_text(self):
        return Path(self.log).read_text()


def start_gateway(bundle, motos, tmp, index="on", strategy="round-robin", extra_bucket=None):
    tmp = Path(tmp)
    port = free_port()
    inspector = free_port()
    state = tmp / "state"
    vars = {
        "S3_BALANCE_CONFIG": config_yaml(motos, strategy=strategy, extra_bucket=extra_bucket),
        "S3_BALANCE_MAX_BODY_BYTES": str(MAX_BODY),
        "S3_BALANCE_INDEX": index,
        "S3_BALANCE_TEST_ROUTES": "1",
    }
    # JSON strings are TOML basic strings.
    var_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in vars.items())
    (tmp / "wrangler.toml").write_text(
        f"""name = "s3-balance-test"
main = "{bundle}"
compatibility_date = "2025-09-01"
# The routes of a custom domain with virtual-host buckets (README, Deploy to Cloudflare).
routes = [
  {{ pattern = "*.{h.BASE_DOMAIN}/*", zone_name = "{h.BASE_DOMAIN}" }},
  {{ pattern = "{h.BASE_DOMAIN}/*", zone_name = "{h.BASE_DOMAIN}" }},
]

[[kv_namespaces]]
binding = "S3_BALANCE_KV"
id = "00000000000000000000000000000000"

[triggers]
crons = ["*/5 * * * *"]

[vars]
{var_lines}
"""
    )
    # A secret, as `wrangler dev` reads secrets locally: referenced as ${MOTO_SECRET}.
    (tmp / ".dev.vars").write_text(f"MOTO_SECRET={MOTO_SECRET}\nADMIN_TOKEN={ADMIN_TOKEN}\n")
    log = tmp / "wrangler.log"
    proc = subprocess.Popen(
        [
            str(WRANGLER),
            "dev",
            "--config",
            str(tmp / "wrangler.toml"),
            "--local",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--inspector-port",
            str(inspector),
            "--persist-to",
            str(state),
            "--test-scheduled",
            # With routes, `wrangler dev` would otherwise hand the Worker the first route's
            # host as request.url and Host (`s3.test`, whatever the client sent). On Cloudflare
            # a Worker on a route sees the client's Host (`photos.s3.example.com`): keep it.
            "--infer-origin-from-routes=false",
            "--show-interactive-dev-session=false",
        ],
        cwd=tmp,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "1", "NO_COLOR": "1"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=120, proc=proc, log=log)
    return Gateway(url, state, tmp, proc, log)


def stop_gateway(gw):
    # Its own process group: wrangler and the workerd it started.
    try:
        os.killpg(gw.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        gw.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(timeout=5)


@pytest.fixture(scope="session")
def gateway(bundle, motos, tmp_path_factory):
    gw = start_gateway(bundle, motos, tmp_path_factory.mktemp("gateway"))
    yield gw
    stop_gateway(gw)


@pytest.fixture(scope="session")
def s3(gateway):
    return gateway.client()
