"""Processes and clients for the end-to-end suite.

Everything runs on 127.0.0.1 on free ports: moto_server processes play the providers, the
`s3-balance` binary (path in $S3_BALANCE_BIN) is the gateway. Every process is started by this
module and stopped by its PID, always (fixtures stop them in `finally`), and every wait loop is
bounded in time.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import pytest
import requests
import yaml

REGION = "us-east-1"
HOST = "127.0.0.1"
# Base domain for virtual-host requests. `*.localhost` does not resolve on every machine, so
# virtual-host requests are sent to 127.0.0.1 with this name in the Host header.
BASE_DOMAIN = "s3.test"

# The gateway's credentials (the config function writes them).
ADMIN_KEY, ADMIN_SECRET = "AKIAE2EADMIN00000001", "e2e-admin-secret-0000000000000000000001"
# Limited to the bucket `limited`, read-write.
LIMITED_KEY, LIMITED_SECRET = "AKIAE2ELIMITED000001", "e2e-limited-secret-00000000000000000001"
# Read-only, all buckets.
READONLY_KEY, READONLY_SECRET = "AKIAE2EREADONLY00001", "e2e-readonly-secret-0000000000000000001"

# Tables that tests leave for the end of the run (conftest prints them in pytest's summary,
# with or without -s): the conformance suites' results.
SUMMARIES: list[str] = []


def wait_until(what: str, check: Callable[[], object], timeout: float, interval: float = 0.1):
    """Polls `check` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - a probe may fail while a process starts
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")
        time.sleep(interval)


def missing(message: str):
    """A tool or service a test needs is not installed: skip the test, but fail it under
    `CI=true`, where scripts/install-test-deps must have installed everything."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: failing, not skipping)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tool(name: str) -> str:
    """A command installed by pip next to this Python, else from PATH."""
    scripts = Path(sysconfig.get_path("scripts")) / name
    if scripts.exists():
        return str(scripts)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found (run scripts/install-test-deps)")
    return found


def gateway_binary() -> str:
    binary = os.environ.get("S3_BALANCE_BIN")
    if not binary:
        root = Path(__file__).resolve().parent.parent
        target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
        for profile in ("release", "debug"):
            candidate = target / profile / "s3-balance"
            if candidate.exists():
                binary = str(candidate)
                break
    if not binary or not Path(binary).exists():
        raise RuntimeError("set S3_BALANCE_BIN to the s3-balance binary (scripts/test does)")
    return binary


class Proc:
    """A child process with its output in a log file, stopped by PID."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict | None = None, cwd=None):
        self.name = name
        self.args = args
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n=== start: {' '.join(args)}\n".encode())
        self._log.flush()
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env, cwd=cwd,
            start_new_session=True,  # a signal to the test's process group must not stop providers
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM (after SIGCONT, in case it was paused), then SIGKILL; returns the exit code."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        code = self.popen.poll()
        self._log.close()
        return code

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-n:])


# ---------------------------------------------------------------------------------------------
# Providers: moto_server processes
# ---------------------------------------------------------------------------------------------


class Moto:
    """One moto_server: an in-memory S3 provider with its own credentials (moto does not check
    them, but the gateway must send each provider its own)."""

    def __init__(self, name: str, log_dir: Path, access_key: str, secret_key: str, port: int | None = None):
        self.name = name
        self.access_key, self.secret_key = access_key, secret_key
        self.port = port or free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.proc = Proc(f"moto-{name}", [tool("moto_server"), "-H", HOST, "-p", str(self.port)], log_dir)
        wait_until(f"moto {name} on port {self.port}", self._ready, 30)
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=3, read_timeout=30
            ),
        )

    def _ready(self):
        if not self.proc.alive():
            raise RuntimeError(f"moto exited:\n{self.proc.tail()}")
        return requests.get(self.endpoint + "/moto-api/", timeout=1).status_code < 500

    def create_bucket(self, bucket: str):
        try:
            self.s3.create_bucket(Bucket=bucket)
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return keys

    def empty_bucket(self, bucket: str, prefix: str = ""):
        keys = self.keys(bucket, prefix)
        for i in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})

    def stop(self):
        return self.proc.stop()


@dataclass
class Backend:
    """A real bucket on a provider, as the gateway config names it."""

    name: str
    moto: Moto
    bucket: str
    max_size: str | None = None
    weight: int = 1
    read_only: bool = False
    enabled: bool = True
    # The provider honours If-Match on PutObject (moto does): overwrites skip the HEAD.
    conditional_writes: bool = False

    @property
    def s3(self):
        return self.moto.s3

    def keys(self, prefix: str = "") -> list[str]:
        return self.moto.keys(self.bucket, prefix)

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def has(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except self.s3.exceptions.ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise


@dataclass
class VBucket:
    """A virtual bucket in the gateway config."""

    name: str
    backends: list[Backend]
    key_layout: str = "{bucket}/{key}"
    reads: str | None = None
    writes: str | None = None
    anonymous_read: bool = False
    # CORS rules in the config's form (allowed_origins, allowed_methods, ...).
    cors: list[dict] | None = None

    def real_key(self, key: str) -> str:
        return self.key_layout.replace("{bucket}", self.name).replace("{key}", key)

    def placement(self, key: str) -> list[str]:
        """Names of the backends that hold `key` (checked on the providers directly)."""
        real = self.real_key(key)
        return [b.name for b in self.backends if b.has(real)]

    def placements(self, prefix: str = "") -> dict[str, str]:
        """key -> backend name, for every object of this bucket under `prefix` on any backend;
        a key found on two backends fails the test (a key must never live twice)."""
        real_prefix = self.real_key(prefix)
        strip = len(self.real_key(""))
        found: dict[str, str] = {}
        for b in self.backends:
            for k in b.keys(real_prefix):
                key = k[strip:]
                assert key not in found, f"{key!r} is on both {found[key]} and {b.name}"
                found[key] = b.name
        return found


# ---------------------------------------------------------------------------------------------
# Gateway config: ONE function, so the schema is easy to adjust in one place.
# ---------------------------------------------------------------------------------------------


def make_config(
    *,
    port: int,
    db_path: Path | str,
    backends: Iterable[Backend],
    vbuckets: Iterable[VBucket],
    strategy: str = "round-robin",
    reads: str = "proxy",
    writes: str = "proxy",
    credentials: list[dict] | None = None,
    health_check_period: str = "2s",
    update_stats_period: str = "60s",
    rise: int = 1,
    fall: int = 1,
    probe_timeout: str = "1s",
    redirect_status: int = 307,
    presign_expiry: str = "5m",
    base_domains: Iterable[str] = (BASE_DOMAIN,),
    metrics_token: str | None = None,
    shutdown_timeout: str = "5s",
    server: dict | None = None,
    backend_client: dict | None = None,
    metadata: dict | None = None,
    allow_create_bucket: bool = False,
    admin_token: str | None = None,
) -> str:
    """The gateway's config.yaml (the Go s3-balance keys plus ours, see
    config/config.example.yaml). `server` adds keys to the `server` section (timeouts,
    max_connections); `backend_client` is that section. Returns YAML text."""
    if credentials is None:
        credentials = [
            {"access_key": ADMIN_KEY, "secret_key": ADMIN_SECRET, "admin": True},
            {"access_key": LIMITED_KEY, "secret_key": LIMITED_SECRET, "buckets": ["limited"]},
            {"access_key": READONLY_KEY, "secret_key": READONLY_SECRET, "read_only": True},
        ]
    buckets = []
    for b in backends:
        entry = {
            "name": b.name,
            "bucket": b.bucket,
            "endpoint": b.moto.endpoint,
            "region": REGION,
            "access_key_id": b.moto.access_key,
            "secret_access_key": b.moto.secret_key,
            "weight": b.weight,
            "enabled": b.enabled,
            "path_style": True,
            "virtual": False,
        }
        if b.max_size:
            entry["max_size"] = b.max_size
        if b.read_only:
            entry["read_only"] = True
        if b.conditional_writes:
            entry["conditional_writes"] = True
        buckets.append(entry)
    for v in vbuckets:
        entry = {
            "name": v.name,
            "virtual": True,
            "backends": [b.name for b in v.backends],
            "key_layout": v.key_layout,
            "anonymous_read": v.anonymous_read,
        }
        if v.reads:
            entry["reads"] = v.reads
        if v.writes:
            entry["writes"] = v.writes
        if v.cors:
            entry["cors"] = v.cors
        buckets.append(entry)
    base_domains = list(base_domains)
    doc = {
        "server": {"host": HOST, "port": port, "shutdown_timeout": shutdown_timeout, **(server or {})},
        "metadata": metadata or {"type": "sqlite", "path": str(db_path)},
        "buckets": buckets,
        "balancer": {
            "strategy": strategy,
            "health_check_period": health_check_period,
            "update_stats_period": update_stats_period,
            "retry_attempts": 1,
            "retry_delay": "100ms",
            "rise": rise,
            "fall": fall,
            "probe_timeout": probe_timeout,
        },
        "metrics": {"enabled": True, "path": "/metrics"},
        "data_path": {"reads": reads, "writes": writes},
        "s3api": {
            "credentials": credentials,
            "auth_required": True,
            "virtual_host": bool(base_domains),
            "allow_create_bucket": allow_create_bucket,
            "redirect_status": redirect_status,
            "presign_expiry": presign_expiry,
            "upload_id_secret": "e2e-upload-id-secret",
        },
    }
    if base_domains:
        doc["s3api"]["host"] = base_domains[0]
        if len(base_domains) > 1:
            doc["s3api"]["base_domains"] = base_domains[1:]
    if metrics_token:
        doc["metrics"]["token"] = metrics_token
    if backend_client:
        doc["backend_client"] = backend_client
    if admin_token:
        doc["admin"] = {"token": admin_token}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# The gateway
# ---------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """`s3-balance serve --config <dir>/config.yaml`, restartable with a changed config."""

    dir: Path
    backends: list[Backend]
    vbuckets: list[VBucket]
    options: dict = field(default_factory=dict)
    port: int = 0
    proc: Proc | None = None
    # Words run before the binary, which they must exec (limits: `sh -c 'ulimit ...; exec "$@"'`).
    command_prefix: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.config_path = self.dir / "config.yaml"
        self.db_path = self.dir / "s3-balance.db"
        self.write_config()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def vbucket(self, name: str) -> VBucket:
        return next(v for v in self.vbuckets if v.name == name)

    def config_text(self, **changes) -> str:
        options = {**self.options, **changes}
        return make_config(
            port=self.port, db_path=self.db_path, backends=self.backends, vbuckets=self.vbuckets, **options
        )

    def write_config(self, **changes):
        """Writes config.yaml (atomically: a reload never sees half a file); `changes` are
        make_config keyword arguments kept for later writes."""
        self.options.update(changes)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self.config_text())
        os.replace(tmp, self.config_path)

    def start(self, timeout: float = 30):
        assert self.proc is None or not self.proc.alive()
        self.proc = Proc(
            f"gateway-{self.dir.name}",
            [*self.command_prefix, gateway_binary(), "serve", "--config", str(self.config_path)],
            self.dir,
            env={"RUST_LOG": os.environ.get("RUST_LOG", "info"), "RUST_BACKTRACE": "1"},
        )
        wait_until(f"gateway /health on {self.endpoint}", self._healthy, timeout)
        return self

    def _healthy(self):
        if not self.proc.alive():
            raise RuntimeError(f"gateway exited with {self.proc.popen.poll()}:\n{self.proc.tail()}")
        return requests.get(self.endpoint + "/health", timeout=2).status_code == 200

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.stop(timeout)
        return code

    def restart(self, **changes):
        self.stop()
        if changes:
            self.write_config(**changes)
        return self.start()

    def delete_metadata(self):
        for suffix in ("", "-wal", "-shm", "-journal"):
            p = Path(str(self.db_path) + suffix)
            if p.exists():
                p.unlink()

    def metrics(self) -> str:
        r = requests.get(self.endpoint + "/metrics", timeout=5)
        r.raise_for_status()
        return r.text

    def run_cli(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """`s3-balance <command> --config config.yaml` (check, reindex)."""
        return subprocess.run(
            [gateway_binary(), command, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # -- clients ----------------------------------------------------------------------------

    def client(self, key: str = ADMIN_KEY, secret: str = ADMIN_SECRET, **config):
        return s3_client(self.endpoint, key, secret, **config)

    def virtual_client(self, key: str = ADMIN_KEY, secret: str = ADMIN_SECRET):
        return virtual_host_client(self.port, key, secret)

    def cli_env(self, key: str = ADMIN_KEY, secret: str = ADMIN_SECRET, home: Path | None = None) -> dict:
        return aws_env(key, secret, home or self.dir)


def s3_client(endpoint: str, key: str, secret: str, **config):
    cfg = dict(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        signature_version="s3v4",
    )
    cfg.update(config)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(**cfg),
    )


def virtual_host_client(port: int, key: str, secret: str, **config):
    """boto3 with virtual-host addressing under BASE_DOMAIN. The names do not resolve, so a
    before-send hook sends each (already signed) request to 127.0.0.1 with the virtual host name
    kept in the Host header. `config`: more botocore Config settings (as for `s3_client`).
    Presigned URLs it makes name `<bucket>.s3.test:<port>`: fetch them with
    `resolve_to_loopback` (curl) or send them to 127.0.0.1 with that Host."""
    client = s3_client(f"http://{BASE_DOMAIN}:{port}", key, secret, **{**config, "s3": {"addressing_style": "virtual"}})

    def send_to_loopback(request, **_):
        url = requests.utils.urlparse(request.url)
        request.headers["Host"] = url.netloc
        request.url = url._replace(netloc=f"{HOST}:{port}").geturl()

    client.meta.events.register_first("before-send.s3", send_to_loopback)
    return client


def resolve_to_loopback(url: str) -> list[str]:
    """curl's `--resolve` arguments that make the host of `url` (a virtual host under
    BASE_DOMAIN, which DNS does not know) resolve to 127.0.0.1: curl then sends the URL's own
    Host, as a user's client would, and a redirect to another host goes there unchanged."""
    parsed = requests.utils.urlparse(url)
    return ["--resolve", f"{parsed.hostname}:{parsed.port or 80}:{HOST}"]


def to_loopback(url: str) -> tuple[str, dict]:
    """`url` sent to 127.0.0.1 with its own host in the Host header (for requests/urllib):
    returns (the loopback URL, {"Host": ...})."""
    parsed = requests.utils.urlparse(url)
    return parsed._replace(netloc=f"{HOST}:{parsed.port or 80}").geturl(), {"Host": parsed.netloc}


def aws_env(key: str, secret: str, home: Path) -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("AWS_"):
            del env[k]
    env.update(
        AWS_ACCESS_KEY_ID=key,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_CONFIG_FILE=str(Path(home) / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(Path(home) / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="1",
    )
    return env


def signed_request(
    method: str,
    url: str,
    key: str = ADMIN_KEY,
    secret: str = ADMIN_SECRET,
    *,
    headers: dict | None = None,
    data: bytes = b"",
    host: str | None = None,
    now: datetime.datetime | None = None,
    tamper: Callable[[dict], None] | None = None,
    allow_redirects: bool = False,
    timeout: float = 30,
) -> requests.Response:
    """A raw SigV4-signed request (botocore's signer). `host` replaces the URL's host in the
    signature and the Host header (virtual-host requests to 127.0.0.1); `now` signs at another
    time; `tamper` may change the headers after signing."""
    sign_url = url
    parsed = requests.utils.urlparse(url)
    if host:
        sign_url = parsed._replace(netloc=host).geturl()
    hdrs = dict(headers or {})
    hdrs["x-amz-content-sha256"] = hashlib.sha256(data).hexdigest()
    request = botocore.awsrequest.AWSRequest(method=method, url=sign_url, data=data, headers=hdrs)
    creds = botocore.credentials.Credentials(key, secret)
    signer = botocore.auth.S3SigV4Auth(creds, "s3", REGION)
    if now is not None:
        original = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda *a, **k: now.replace(tzinfo=None)
        try:
            signer.add_auth(request)
        finally:
            botocore.auth.get_current_datetime = original
    else:
        signer.add_auth(request)
    out = dict(request.headers.items())
    if host:
        out["Host"] = host
    if tamper:
        tamper(out)
    return requests.request(
        method, url, headers=out, data=data, allow_redirects=allow_redirects, timeout=timeout
    )


def error_code(response: requests.Response) -> str | None:
    m = re.search(r"<Code>([^<]*)</Code>", response.text)
    return m.group(1) if m else None


def metric_value(text: str, name: str, **labels) -> float | None:
    """Value of the sample of `name` whose labels include `labels` (None if absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def payload(size: int, seed: str = "") -> bytes:
    """Deterministic bytes that differ from block to block (a misplaced range shows)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


def run(args: list[str], env: dict | None = None, timeout: float = 120, cwd=None, check: bool = True):
    """Runs a client command; on failure the assertion shows its output."""
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check:
        assert r.returncode == 0, f"{args} exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def python() -> str:
    return sys.executable


def presigned_url(method: str, url: str, key: str, secret: str, expires: int, now=None) -> str:
    """A SigV4 presigned URL made with botocore's pure-Python signer at time `now` (boto3's
    own `generate_presigned_url` may sign with awscrt, which ignores a patched clock)."""
    request = botocore.awsrequest.AWSRequest(method=method, url=url)
    signer = botocore.auth.S3SigV4QueryAuth(botocore.credentials.Credentials(key, secret), "s3", REGION, expires=expires)
    original = botocore.auth.get_current_datetime
    if now is not None:
        botocore.auth.get_current_datetime = lambda *a, **k: now.replace(tzinfo=None)
    try:
        signer.add_auth(request)
    finally:
        botocore.auth.get_current_datetime = original
    return request.url


def make_tree(root, n: int, seed: int, sizes, large: int = 0):
    """`n` files with odd names in a few nested dirs, sizes drawn from `sizes`, plus `large.bin`
    of `large` bytes when asked. The files are an hour old: `aws s3 sync` re-uploads a file
    whose mtime is newer than the object's LastModified (whole seconds), which a tree written
    in the second of the upload can be."""
    rnd = random.Random(seed)
    for i in range(n):
        parts = [f"dir{rnd.randint(0, 4)}" for _ in range(rnd.randint(0, 3))]
        name = rnd.choice(["file", "é file", "data+x", "a&b"]) + f"-{i}" + rnd.choice([".txt", ".bin", ""])
        path = root.joinpath(*parts, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload(rnd.choice(sizes), f"{seed}-{i}"))
    if large:
        (root / "large.bin").write_bytes(payload(large, "large"))
    old = time.time() - 3600
    for p in root.rglob("*"):
        os.utime(p, (old, old))
    return root


def chromium_driver():
    """Headless Chromium under Selenium (Debian's chromium and chromium-driver); missing
    pieces fail under CI=true."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        missing("selenium is not installed (scripts/install-test-deps installs it)")
    if not (chromium and driver):
        missing("chromium and chromium-driver are not installed (scripts/install-test-deps installs them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,700",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)
