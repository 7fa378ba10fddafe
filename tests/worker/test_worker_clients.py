"""The server's client scenarios (tests/test_clients.py, test_objects.py, test_datapath.py,
test_multipart_copy.py) run against the Worker under workerd, with the same real clients:
boto3, the `aws` CLI, `rclone`, `s3cmd` and `curl -L`. Fixtures come from conftest.py (two
moto backends, the built Worker under `wrangler dev --local`); helpers from tests/harness.py.
Run: `python -m pytest tests/worker -q`.

Server scenarios NOT run against the Worker, and why:
- SIGTERM exits zero / lets a request in flight finish (test_operations.py): the Worker has no
  process to signal; workerd owns the isolate's lifetime.
- Hot reload of the config *file*, and an invalid config change keeping the old one
  (test_operations.py, test_placement.py strategy hot switch): the Worker has no file; its
  config hot switch goes through the KV key `config`, tested in test_worker.py.
- The `reindex` and `check` commands, and deleting the SQLite metadata file
  (test_operations.py): server-only CLI and storage; the Worker's index is KV, and a lost or
  stale KV entry is tested in test_worker.py instead.
- `--dev` mode (test_operations.py): a server-only flag.
- Killing a backend mid-test (test_operations.py backend outage): a Worker cannot see the
  process; the cron test in test_worker.py stops a backend with SIGSTOP instead.
- Bodies over 100 MB, and the CLIs' multipart uploads of 8-11 MiB files (test_clients.py uses a
  9 MiB file for aws and an 11 MiB one for s3cmd): the plan body limit (100 MB, lowered here to
  6 MB through S3_BALANCE_MAX_BODY_BYTES to keep the run fast) refuses any single request
  body over it, and aws's default 8 MiB part is over the lowered limit. Multipart itself is
  tested in test_worker.py with 5 MiB parts; the trees here are small files.
- DeleteObjects of 1000 keys (test_multipart_copy.py): 300 keys here, as on the real platform
  each backend delete is a subrequest (the paid plan's limit is 1000 per invocation).
- Placement strategies least-space/weighted and their usage numbers (test_placement.py): the
  Worker's usage is approximate (cron scan), so the exact expectations of the server's tests do
  not hold; round-robin and consistent-hash are exercised in test_worker.py.
- Metrics bearer token and per-key bucket limits (test_auth.py): not in the Worker's test
  config; auth errors are tested in test_worker.py.

Virtual-host addressing (test_objects.py) is in test_worker_virtual_host.py: the test config
has `virtual_host: true` under the base domain `s3.test`, with the routes of a custom domain.

rclone signs `Accept-Encoding: gzip` on object GETs, and the Workers runtime hands the Worker a
normalized Accept-Encoding (the client's value is in `request.cf.clientAcceptEncoding`); the
Worker puts the client's value back before the SigV4 check (test_rclone_sync_down).
"""

import concurrent.futures
import os
import subprocess
import sys
import warnings
from pathlib import Path

import botocore
import pytest

from conftest import ACCESS_KEY, SECRET_KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

BUCKET = "photos"


def cli_env(home):
    return h.aws_env(ACCESS_KEY, SECRET_KEY, home)


def make_tree(root, n=200, seed=11):
    """`n` small files (under the lowered body limit) in a few nested dirs, odd names included."""
    return h.make_tree(root, n, seed, [0, 1, 100, 4096, 20_000])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("tree") / "src")


def backends_holding(motos, prefix):
    """Backend name of each object under `photos/<prefix>`, read from the backends directly."""
    out = {}
    for m in motos.values():
        pages = m.client.get_paginator("list_objects_v2").paginate(Bucket=m.bucket, Prefix=f"{BUCKET}/{prefix}")
        for page in pages:
            for o in page.get("Contents", []):
                out[o["Key"]] = m.name
    return out


def count(s3, prefix):
    n, token = 0, None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, **kw)
        n += page.get("KeyCount", 0)
        if not page.get("IsTruncated"):
            return n
        token = page["NextContinuationToken"]


def status_of(exc):
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


# --- aws CLI ------------------------------------------------------------------------------------


def test_aws_s3_sync_up_and_down(gateway, s3, motos, tree, tmp_path):
    aws = h.tool("aws")
    env = cli_env(tmp_path)
    env["AWS_MAX_ATTEMPTS"] = "2"
    dest = f"s3://{BUCKET}/cli-aws"
    base = [aws, "--endpoint-url", gateway.url, "s3"]
    up = base + ["sync", str(tree), dest, "--only-show-errors", "--cli-read-timeout", "20"]
    first = h.run(up, env=env, timeout=150, check=False)
    if first.returncode != 0:
        # Seen about one run in three: the client gets a 500 for a PUT that the Worker logged
        # as 200 (wrangler's local dev proxy between the client and workerd). sync is
        # idempotent: a second run must then upload just the missing files and succeed.
        warnings.warn(f"aws s3 sync through `wrangler dev` failed once, retried: {first.stderr[-800:]}")
        h.run(up, env=env, timeout=150)
    assert count(s3, "cli-aws/") == 200
    assert set(backends_holding(motos, "cli-aws/").values()) == {"a", "b"}, "the tree spreads over both backends"

    down = tmp_path / "down"
    h.run(base + ["sync", dest, str(down), "--only-show-errors", "--cli-read-timeout", "20"], env=env, timeout=150)
    assert h.tree_digest(down) == h.tree_digest(tree)

    # A second sync has nothing to do (sizes and times from the Worker's listing match).
    r = h.run(base + ["sync", str(tree), dest], env=env, timeout=150)
    assert "upload:" not in r.stdout

    r = h.run(base + ["ls", f"{dest}/"], env=env)
    assert "PRE dir0/" in r.stdout
    one = next(p for p in sorted(tree.iterdir()) if p.is_file() and p.stat().st_size > 0)
    r = subprocess.run(base + ["cp", f"{dest}/{one.name}", "-"], env=env, capture_output=True, timeout=60, check=True)
    assert r.stdout == one.read_bytes()
    up = tmp_path / "up.txt"
    up.write_text("copied up by aws s3 cp")
    h.run(base + ["cp", str(up), f"{dest}/extra/up.txt"], env=env)
    assert s3.get_object(Bucket=BUCKET, Key="cli-aws/extra/up.txt")["Body"].read() == b"copied up by aws s3 cp"

    h.run(base + ["rm", "--recursive", dest, "--only-show-errors"], env=env, timeout=150)
    assert count(s3, "cli-aws/") == 0
    assert backends_holding(motos, "cli-aws/") == {}


# --- rclone ------------------------------------------------------------------------------------


def rclone_env(gateway, tmp_path):
    # Without the machine's AWS_* settings (an AWS_CA_BUNDLE breaks rclone's plain-HTTP client).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        RCLONE_CONFIG=str(tmp_path / "rclone.conf"),
        RCLONE_CONFIG_GW_TYPE="s3",
        RCLONE_CONFIG_GW_PROVIDER="Other",
        RCLONE_CONFIG_GW_ENDPOINT=gateway.url,
        RCLONE_CONFIG_GW_ACCESS_KEY_ID=ACCESS_KEY,
        RCLONE_CONFIG_GW_SECRET_ACCESS_KEY=SECRET_KEY,
        RCLONE_CONFIG_GW_REGION="us-east-1",
        RCLONE_CONFIG_GW_FORCE_PATH_STYLE="true",
    )
    return env


def test_rclone_sync_up(gateway, s3, motos, tree, tmp_path):
    env = rclone_env(gateway, tmp_path)
    remote = f"gw:{BUCKET}/cli-rclone"
    retry = ["--retries", "1", "--low-level-retries", "2"]
    h.run(["rclone", "sync", str(tree), remote, *retry], env=env, timeout=150)
    assert count(s3, "cli-rclone/") == 200
    assert set(backends_holding(motos, "cli-rclone/").values()) == {"a", "b"}
    # Sizes and MD5s (ETags from the Worker's listing) against the local tree.
    h.run(["rclone", "check", str(tree), remote], env=env, timeout=150)
    # A second sync has nothing to transfer.
    r = h.run(["rclone", "sync", str(tree), remote, "-v", *retry], env=env, timeout=150)
    assert "Copied" not in r.stderr
    r = h.run(["rclone", "lsf", remote, "--max-depth", "1"], env=env)
    assert "dir0/" in r.stdout.splitlines()


def test_rclone_sync_down(gateway, s3, tree, tmp_path):
    env = rclone_env(gateway, tmp_path)
    remote = f"gw:{BUCKET}/cli-rclone-down"
    h.run(["rclone", "copy", str(tree / "dir0"), remote, "--retries", "1"], env=env, timeout=150)
    down = tmp_path / "down"
    r = subprocess.run(["rclone", "sync", remote, str(down), "--retries", "1", "--low-level-retries", "1"],
                       env=env, capture_output=True, timeout=150)
    h.run(["rclone", "purge", remote], env=env, timeout=150)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")[-2000:]
    assert h.tree_digest(down) == h.tree_digest(tree / "dir0")


def test_rclone_purge(gateway, s3, motos, tmp_path):
    env = rclone_env(gateway, tmp_path)
    s3.put_object(Bucket=BUCKET, Key="cli-rclone/extra", Body=b"x")
    h.run(["rclone", "purge", f"gw:{BUCKET}/cli-rclone"], env=env, timeout=150)
    assert count(s3, "cli-rclone/") == 0
    assert backends_holding(motos, "cli-rclone/") == {}


# --- s3cmd -------------------------------------------------------------------------------------


def test_s3cmd_put_get_ls_del(gateway, s3, tmp_path):
    hostport = gateway.url.removeprefix("http://")
    cfg = tmp_path / "s3cmd.cfg"
    cfg.write_text(
        "[default]\n"
        f"access_key = {ACCESS_KEY}\n"
        f"secret_key = {SECRET_KEY}\n"
        f"host_base = {hostport}\n"
        f"host_bucket = {hostport}\n"
        "bucket_location = us-east-1\n"
        "use_https = False\n"
        "signature_v2 = False\n"
        "check_ssl_certificate = False\n"
    )
    s3cmd = [h.tool("s3cmd"), "-c", str(cfg)]
    small = tmp_path / "small é.txt"
    small.write_text("from s3cmd")
    mid = tmp_path / "mid.bin"
    mid.write_bytes(h.payload(1_000_000, "s3cmd"))
    h.run(s3cmd + ["put", str(small), f"s3://{BUCKET}/cli-s3cmd/"])
    h.run(s3cmd + ["put", str(mid), f"s3://{BUCKET}/cli-s3cmd/mid.bin"])
    r = h.run(s3cmd + ["ls", f"s3://{BUCKET}/cli-s3cmd/"])
    assert "small é.txt" in r.stdout and "mid.bin" in r.stdout
    out = tmp_path / "out"
    out.mkdir()
    h.run(s3cmd + ["get", f"s3://{BUCKET}/cli-s3cmd/mid.bin", str(out / "mid.bin")])
    h.run(s3cmd + ["get", f"s3://{BUCKET}/cli-s3cmd/small é.txt", str(out / "small.txt")])
    assert (out / "mid.bin").read_bytes() == mid.read_bytes()
    assert (out / "small.txt").read_text() == "from s3cmd"
    h.run(s3cmd + ["del", f"s3://{BUCKET}/cli-s3cmd/mid.bin", f"s3://{BUCKET}/cli-s3cmd/small é.txt"])
    assert count(s3, "cli-s3cmd/") == 0


# --- presigned URLs followed by curl -L ------------------------------------------------------------


def test_presigned_put_and_get_with_curl(gateway, tmp_path):
    s3 = h.s3_client(gateway.url, ACCESS_KEY, SECRET_KEY)  # s3v4, path style
    key = "presigned/curl é+.bin"
    data = h.payload(50_000, "presigned")
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    put = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=300)
    assert "X-Amz-Signature=" in put
    r = h.run(["curl", "-sS", "-L", "--fail", "-T", str(src), put])
    get = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=300)
    out = subprocess.run(["curl", "-sS", "-L", "--fail", get], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == data
    # A presigned URL for another key does not open this one.
    other = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "presigned/other"}, ExpiresIn=300)
    r = h.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", other.replace("presigned/other", "presigned/curl%20%C3%A9%2B.bin")], check=False)
    assert r.stdout == "403"
    s3.delete_object(Bucket=BUCKET, Key=key)


# --- ranges and conditional reads -----------------------------------------------------------------


def test_range_requests(s3):
    key = "cond/ranged"
    body = h.payload(100_000, key)
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    first = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-99")
    assert first["Body"].read() == body[:100]
    assert first["ContentRange"] == "bytes 0-99/100000"
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 206
    middle = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=5000-5999")
    assert middle["Body"].read() == body[5000:6000] and middle["ContentLength"] == 1000
    suffix = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=-500")
    assert suffix["Body"].read() == body[-500:]
    assert suffix["ContentRange"] == "bytes 99500-99999/100000"
    assert s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=99990-")["Body"].read() == body[99990:]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=200000-300000")
    assert status_of(e) == 416
    assert e.value.response["Error"]["Code"] == "InvalidRange"


def test_conditional_requests(s3):
    key = "cond/etag"
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=b"v1")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key=key, IfNoneMatch=etag)
    assert status_of(e) == 304
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key=key, IfMatch='"0123456789abcdef0123456789abcdef"')
    assert status_of(e) == 412
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket=BUCKET, Key=key, IfMatch=etag)["Body"].read() == b"v1"
    assert s3.get_object(Bucket=BUCKET, Key=key, IfNoneMatch='"nope"')["Body"].read() == b"v1"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket=BUCKET, Key=key, IfNoneMatch=etag)
    assert status_of(e) == 304


# --- DeleteObjects over both backends ------------------------------------------------------------


def test_delete_objects_hundreds_of_keys_over_both_backends(gateway, motos):
    s3 = gateway.client(max_pool_connections=8)
    keys = [f"bulk/{i:04d}" for i in range(300)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=b"d"), keys))
    held = backends_holding(motos, "bulk/")
    assert len(held) == 300 and set(held.values()) == {"a", "b"}
    missing = "bulk/never-written"
    r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys + [missing]]})
    assert r.get("Errors", []) == []
    # S3 reports a missing key as deleted.
    assert sorted(d["Key"] for d in r["Deleted"]) == sorted(keys + [missing])
    assert count(s3, "bulk/") == 0
    assert backends_holding(motos, "bulk/") == {}
