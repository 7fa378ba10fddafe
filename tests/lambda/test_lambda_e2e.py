"""End to end: the Lambda functions under `cargo lambda watch` (the local Lambda emulator, with
function URL emulation), DynamoDB and two S3 backends served by `moto_server`, driven by
boto3 and curl as real clients.

Path handling of the emulator: `http://127.0.0.1:PORT/lambda-url/<function>/<path>` hands the
function `rawPath = /<path>` (prefix stripped), so a client that signed the URL it called
(with the prefix) would not verify. Any other path goes to the package's default function with
`rawPath` unchanged when the emulator serves one function; with `--bin s3-balance-http` that is the HTTP function, so clients use
`http://127.0.0.1:PORT` as a plain S3 endpoint (one emulator per function: with two, the
default route is disabled) and sign exactly what the function sees, as
behind a real function URL.

Virtual-host style (`files.s3.test`, the `virtual_host` tests): the emulator puts the Host the
client sent into the event's headers, as an HTTP API custom domain does.

Run: pip install -r tests/lambda/requirements.txt && pytest tests/lambda
Excluded, with reasons:
- Bodies over ~4.5 MB through the proxy (Lambda's 6 MB payload, base64): refused, tested.
- Multipart with S3's 5 MiB minimum part size: every part but the last must be >= 5 MiB, more
  than a Lambda request carries; multipart is tested with moto's minimum lowered
  (S3_UPLOAD_PART_MIN_SIZE) to show the routing works with small parts.
- Binary bodies without Content-Type: the emulator (not Lambda) decodes such bodies as UTF-8
  text and fails on other bytes, so uploads here set a Content-Type.
- CORS preflights: the emulator answers every `OPTIONS` itself (a permissive CORS layer of its
  own, whatever the origin), so they never reach the function here; the function's answer to a
  function URL's preflight is tested with a JSON event in lambda/tests/handler.rs.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE = os.path.join(ROOT, "lambda", "tests", "fixtures", "eventbridge-scheduled.json")
GW_KEY, GW_SECRET = "AKIDLAMBDAE2E", "lambda-e2e-secret"
TABLE = "s3-balance-e2e"

sys.path.insert(0, os.path.join(ROOT, "tests"))
import harness  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _tools():
    if not (shutil.which("cargo-lambda") and shutil.which("moto_server")):
        harness.missing("needs cargo-lambda and moto_server (pip install -r tests/lambda/requirements.txt)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} not listening")


def start_moto(extra_env=None):
    port = free_port()
    env = dict(os.environ, **(extra_env or {}))
    proc = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def aws(service, endpoint, **kw):
    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", **kw,
    )


CONFIG = """
buckets:
  - name: back-a
    endpoint: {a}
    region: us-east-1
    access_key_id: test
    secret_access_key: ${{E2E_BACKEND_SECRET}}
    path_style: true
  - name: back-b
    endpoint: {b}
    region: us-east-1
    access_key_id: test
    secret_access_key: ${{E2E_BACKEND_SECRET}}
    path_style: true
  - name: files
    virtual: true
    reads: auto
    writes: auto
balancer:
  strategy: round-robin
  rise: 1
  fall: 1
  probe_timeout: 1s
s3api:
  auth_required: true
  access_key: {key}
  secret_key: {secret}
  virtual_host: true
  base_domains: ["{base_domain}"]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    procs = []
    try:
        ddb_proc, ddb = start_moto()
        procs.append(ddb_proc)
        # moto enforces S3's 5 MiB minimum part size unless told otherwise.
        small_parts = {"S3_UPLOAD_PART_MIN_SIZE": "1024"}
        a_proc, a = start_moto(small_parts)
        b_proc, b = start_moto(small_parts)
        procs += [a_proc, b_proc]
        for endpoint, bucket in [(a, "back-a"), (b, "back-b")]:
            aws("s3", endpoint).create_bucket(Bucket=bucket)
        aws("dynamodb", ddb).create_table(
            TableName=TABLE,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
        )
        port, health_port = free_port(), free_port()
        env = dict(
            os.environ,
            S3_BALANCE_TABLE=TABLE,
            S3_BALANCE_CONFIG=CONFIG.format(a=a, b=b, key=GW_KEY, secret=GW_SECRET, base_domain=harness.BASE_DOMAIN),
            E2E_BACKEND_SECRET="test",
            AWS_ENDPOINT_URL_DYNAMODB=ddb,
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_EC2_METADATA_DISABLED="true",
            RUST_LOG="info",
        )
        log = open(tmp_path_factory.mktemp("watch") / "watch.log", "w+")
        # One emulator per function: with a single function, requests on any path go to it
        # with rawPath unchanged (no /lambda-url/<name> prefix to strip from what was signed).
        for bin_name, p in [("s3-balance-http", port), ("s3-balance-health", health_port)]:
            procs.append(subprocess.Popen(
                ["cargo", "lambda", "watch", "--ignore-changes", "-A", "127.0.0.1", "-P", str(p),
                 "-p", "s3-balance-lambda", "--bin", bin_name],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))
        gateway = f"http://127.0.0.1:{port}"
        # The first request builds and starts the function: allow for a build.
        deadline = time.time() + 900
        while True:
            try:
                with urllib.request.urlopen(gateway + "/health", timeout=600) as r:
                    if r.status == 200:
                        break
            except Exception as e:
                log.seek(0)
                text = log.read()
                if time.time() > deadline or "default function route is disabled" in text or \
                        any(w.poll() is not None for w in procs[3:]):
                    raise RuntimeError(f"cargo lambda watch did not serve ({e}):\n{text[-5000:]}")
                time.sleep(1)
        yield dict(gateway=gateway, port=port, health_port=health_port, a=a, b=b, ddb=ddb, b_proc=b_proc, env=env, log=log)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a stopped backend must be able to exit
        for i, p in enumerate(procs):
            if i >= 3:
                os.killpg(p.pid, signal.SIGTERM)  # the emulator and the functions it started
            elif p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def gw(stack, **config):
    return boto3.client(
        "s3", endpoint_url=stack["gateway"], region_name="us-east-1",
        aws_access_key_id=GW_KEY, aws_secret_access_key=GW_SECRET,
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 1},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required", **config),
    )


def backend_keys(stack):
    out = {}
    for name, endpoint in [("back-a", stack["a"]), ("back-b", stack["b"])]:
        r = aws("s3", endpoint).list_objects_v2(Bucket=name)
        out[name] = sorted(o["Key"] for o in r.get("Contents", []))
    return out


def index_entry(stack, key, bucket="files"):
    item = aws("dynamodb", stack["ddb"]).get_item(
        TableName=TABLE, Key={"pk": {"S": f"o#{bucket}"}, "sk": {"S": key}}, ConsistentRead=True)
    return item.get("Item")


def test_put_get_head_list_copy_delete(stack):
    s3 = gw(stack)
    s3.put_object(Bucket="files", Key="dir/hello world+1.txt", Body=b"hello lambda",
                  ContentType="text/plain")
    got = s3.get_object(Bucket="files", Key="dir/hello world+1.txt")
    assert got["Body"].read() == b"hello lambda"
    head = s3.head_object(Bucket="files", Key="dir/hello world+1.txt")
    assert head["ContentType"] == "text/plain"
    entry = index_entry(stack, "dir/hello world+1.txt")
    assert entry and entry["backend"]["S"] in ("back-a", "back-b")
    assert f"files/dir/hello world+1.txt" in backend_keys(stack)[entry["backend"]["S"]]

    s3.put_object(Bucket="files", Key="dir/second.txt", Body=b"2", ContentType="text/plain")
    listed = s3.list_objects_v2(Bucket="files", Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/hello world+1.txt", "dir/second.txt"]

    s3.copy_object(Bucket="files", Key="copy.txt",
                   CopySource={"Bucket": "files", "Key": "dir/hello world+1.txt"})
    assert s3.get_object(Bucket="files", Key="copy.txt")["Body"].read() == b"hello lambda"

    for key in ["dir/hello world+1.txt", "dir/second.txt", "copy.txt"]:
        s3.delete_object(Bucket="files", Key=key)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="files", Key="copy.txt")
    assert e.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    assert index_entry(stack, "copy.txt") is None


def test_multipart_with_small_parts(stack):
    s3 = gw(stack)
    up = s3.create_multipart_upload(Bucket="files", Key="mp.txt", ContentType="text/plain")
    parts = []
    for n, data in enumerate([b"a" * 2048, b"b" * 2048, b"c" * 10], start=1):
        r = s3.upload_part(Bucket="files", Key="mp.txt", UploadId=up["UploadId"],
                           PartNumber=n, Body=data)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket="files", Key="mp.txt", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": parts})
    body = s3.get_object(Bucket="files", Key="mp.txt")["Body"].read()
    assert body == b"a" * 2048 + b"b" * 2048 + b"c" * 10


def curl(*args):
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=60)


def test_presigned_get_redirects_and_curl_follows(stack):
    s3 = gw(stack)
    s3.put_object(Bucket="files", Key="r.txt", Body=b"redirected bytes", ContentType="text/plain")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "files", "Key": "r.txt"},
                                    ExpiresIn=300)
    first = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", url)
    code, location = first.stdout.decode().split(" ", 1)
    assert code == "307", first
    assert location.startswith(stack["a"]) or location.startswith(stack["b"]), location
    followed = curl("-L", url)
    assert followed.stdout == b"redirected bytes", followed


def test_presigned_put_redirects_to_the_backend(stack, tmp_path):
    s3 = gw(stack)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "files", "Key": "up.txt"},
                                    ExpiresIn=300)
    f = tmp_path / "up.txt"
    f.write_bytes(b"uploaded past the gateway")
    r = curl("-L", "-T", str(f), "-H", "Content-Type: text/plain", "-o", "/dev/null",
             "-w", "%{http_code} %{num_redirects}", url)
    assert r.stdout.decode() == "200 1", r
    # Not indexed by the redirect (the gateway never saw the body): found by probing.
    assert s3.get_object(Bucket="files", Key="up.txt")["Body"].read() == b"uploaded past the gateway"


def test_large_get_is_redirected_instead_of_overflowing_the_response(stack):
    big = b"z" * (5 * 1024 * 1024)
    aws("s3", stack["a"]).put_object(Bucket="back-a", Key="files/big.txt", Body=big)
    s3 = gw(stack)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "files", "Key": "big.txt"},
                                    ExpiresIn=300)
    # Through the SDK (header-signed; `auto` proxies it): too large for a Lambda response,
    # so the function answers 307 rather than failing; botocore does not follow it.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="files", Key="big.txt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 307
    r = curl("-L", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url)
    assert r.stdout.decode() == f"200 {len(big)}", r


def test_six_megabyte_put_is_refused_with_nothing_written(stack):
    s3 = gw(stack)
    before = backend_keys(stack)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="files", Key="six.txt", Body=b"s" * 6_000_000,
                      ContentType="text/plain")
    assert e.value.response["Error"]["Code"] == "EntityTooLarge"
    assert "presigned URL" in e.value.response["Error"]["Message"]
    assert backend_keys(stack) == before
    assert index_entry(stack, "six.txt") is None


# --- virtual-host style: `files.s3.test` -------------------------------------------------------
# The function sees the Host the client sent (the emulator puts it in the event's headers, as
# a function URL or an HTTP API custom domain does). Names under s3.test do not resolve:
# boto3 sends each signed request to 127.0.0.1 with the virtual host in the Host header,
# curl gets `--resolve files.s3.test:<port>:127.0.0.1`, requests a Host header.


def vgw(stack, **config):
    """boto3 in virtual-host style; `.sent` lists (Host, path) of every request it sent."""
    client = harness.virtual_host_client(
        stack["port"], GW_KEY, GW_SECRET,
        request_checksum_calculation="when_required", response_checksum_validation="when_required", **config,
    )
    client.sent = []

    def record(request, **_):
        host = request.headers["Host"]
        client.sent.append((host.decode() if isinstance(host, bytes) else host,
                            urllib.parse.urlparse(request.url).path))

    client.meta.events.register("before-send.s3", record)
    return client


def assert_virtual_host(client, stack, bucket="files"):
    """Every request named the bucket by its Host, none by its path."""
    assert client.sent, "no request was sent"
    for host, path in client.sent:
        assert host == f"{bucket}.{harness.BASE_DOMAIN}:{stack['port']}", (host, path)
        assert not path.startswith(f"/{bucket}/") and path != f"/{bucket}", path


def test_virtual_host_put_get_head_list_copy_multipart_delete(stack):
    """The object calls addressed as `files.s3.test`: bytes round-trip, each object is indexed
    on one backend under `files/`, listings show the keys, a small-part multipart upload
    completes, deletes reach the index; the path-style client sees the same objects."""
    vs3, s3 = vgw(stack), gw(stack)
    objects = {"vh/dir/é file+1.txt": b"first", "vh/dir/a&b.txt": b"second" * 1000, "vh/top.txt": b"top"}
    for key, data in objects.items():
        vs3.put_object(Bucket="files", Key=key, Body=data, ContentType="text/plain")
    for key, data in objects.items():
        assert vs3.get_object(Bucket="files", Key=key)["Body"].read() == data
        head = vs3.head_object(Bucket="files", Key=key)
        assert head["ContentLength"] == len(data) and head["ContentType"] == "text/plain"
        entry = index_entry(stack, key)
        assert entry and f"files/{key}" in backend_keys(stack)[entry["backend"]["S"]], key
        assert s3.get_object(Bucket="files", Key=key)["Body"].read() == data

    listed = vs3.list_objects_v2(Bucket="files", Prefix="vh/", Delimiter="/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["vh/top.txt"]
    assert [p["Prefix"] for p in listed.get("CommonPrefixes", [])] == ["vh/dir/"]

    vs3.copy_object(Bucket="files", Key="vh/copy.txt", CopySource={"Bucket": "files", "Key": "vh/dir/a&b.txt"})
    assert vs3.get_object(Bucket="files", Key="vh/copy.txt")["Body"].read() == objects["vh/dir/a&b.txt"]

    up = vs3.create_multipart_upload(Bucket="files", Key="vh/mp.txt", ContentType="text/plain")
    parts = [b"p" * 2048, b"q" * 2048, b"r" * 10]
    etags = [vs3.upload_part(Bucket="files", Key="vh/mp.txt", UploadId=up["UploadId"], PartNumber=n, Body=d)["ETag"]
             for n, d in enumerate(parts, start=1)]
    vs3.complete_multipart_upload(
        Bucket="files", Key="vh/mp.txt", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]})
    assert vs3.get_object(Bucket="files", Key="vh/mp.txt")["Body"].read() == b"".join(parts)

    with pytest.raises(ClientError) as e:
        vs3.get_object(Bucket="files", Key="vh/never-written")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"

    for key in [*objects, "vh/copy.txt", "vh/mp.txt"]:
        vs3.delete_object(Bucket="files", Key=key)
        assert index_entry(stack, key) is None, key
    assert vs3.list_objects_v2(Bucket="files", Prefix="vh/").get("KeyCount") == 0
    assert not [k for ks in backend_keys(stack).values() for k in ks if k.startswith("files/vh/")]
    assert_virtual_host(vs3, stack)


def test_virtual_host_unknown_bucket_and_bare_base_domain(stack):
    """`nosuchbucket.s3.test` is a missing bucket (404 NoSuchBucket), not a path; the bare base
    domain serves path-style calls (ListBuckets shows `files`)."""
    vs3 = vgw(stack)
    with pytest.raises(ClientError) as e:
        vs3.list_objects_v2(Bucket="nosuchbucket")
    assert e.value.response["Error"]["Code"] == "NoSuchBucket"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "files" in [b["Name"] for b in vs3.list_buckets()["Buckets"]]


def backend_of(stack, key):
    """(endpoint, real bucket) of the backend that holds `files/<key>`."""
    name = index_entry(stack, key)["backend"]["S"]
    return (stack["a"] if name == "back-a" else stack["b"]), name


def test_virtual_host_presigned_get_redirects_to_the_backend(stack):
    """A presigned GET URL made in virtual-host style (`http://files.s3.test:<port>/<key>`,
    reads `auto`) is answered 307 with a presigned URL of the backend holding the object;
    following it with requests, or `curl -L` on the URL itself, yields the bytes. The same URL
    with another Host is refused: the host is part of what was signed."""
    vs3 = vgw(stack)
    key = "vh/redirected é.txt"
    data = b"redirected through a virtual host"
    vs3.put_object(Bucket="files", Key=key, Body=data, ContentType="text/plain")
    url = vs3.generate_presigned_url("get_object", Params={"Bucket": "files", "Key": key}, ExpiresIn=300)
    parsed = urllib.parse.urlparse(url)
    assert parsed.netloc == f"files.{harness.BASE_DOMAIN}:{stack['port']}", url
    assert not parsed.path.startswith("/files/"), url
    endpoint, bucket = backend_of(stack, key)

    loop, host = harness.to_loopback(url)
    r = harness.requests.get(loop, headers=host, allow_redirects=False, timeout=60)
    assert r.status_code == 307, (r.status_code, r.text[:500])
    location = r.headers["location"]
    assert location.startswith(f"{endpoint}/{bucket}/files/vh/"), location
    assert "X-Amz-Signature=" in location, location
    followed = harness.requests.get(location, timeout=30)
    assert followed.status_code == 200 and followed.content == data

    out = curl("-L", "--fail", *harness.resolve_to_loopback(url), url)
    assert out.returncode == 0 and out.stdout == data, out

    for other in (f"back.{harness.BASE_DOMAIN}:{stack['port']}", f"127.0.0.1:{stack['port']}"):
        r = harness.requests.get(loop, headers={"Host": other}, allow_redirects=False, timeout=60)
        assert r.status_code == 403, (other, r.status_code, r.text[:500])
    vs3.delete_object(Bucket="files", Key=key)


def test_virtual_host_presigned_put_redirects_to_the_backend(stack, tmp_path):
    """A presigned PUT URL made in virtual-host style (writes `auto`) is answered 307 with a
    presigned PUT URL of a backend; the body sent there is then readable through the gateway
    in either style. curl -L does both hops itself."""
    vs3 = vgw(stack)
    key = "vh/uploaded.txt"
    url = vs3.generate_presigned_url("put_object", Params={"Bucket": "files", "Key": key}, ExpiresIn=300)
    assert urllib.parse.urlparse(url).netloc == f"files.{harness.BASE_DOMAIN}:{stack['port']}", url

    loop, host = harness.to_loopback(url)
    data = b"uploaded past the gateway, virtual-host style"
    r = harness.requests.put(loop, headers={**host, "Content-Type": "text/plain"}, data=data,
                             allow_redirects=False, timeout=60)
    assert r.status_code == 307, (r.status_code, r.text[:500])
    location = r.headers["location"]
    assert location.startswith((f"{stack['a']}/back-a/files/vh/", f"{stack['b']}/back-b/files/vh/")), location
    put = harness.requests.put(location, data=data, headers={"Content-Type": "text/plain"}, timeout=30)
    assert put.status_code == 200, put.text
    assert vs3.get_object(Bucket="files", Key=key)["Body"].read() == data

    f = tmp_path / "up.txt"
    f.write_bytes(b"second upload, by curl")
    r = curl("-L", *harness.resolve_to_loopback(url), "-T", str(f), "-H", "Content-Type: text/plain",
             "-o", "/dev/null", "-w", "%{http_code} %{num_redirects}", url)
    assert r.stdout.decode() == "200 1", r
    assert gw(stack).get_object(Bucket="files", Key=key)["Body"].read() == b"second upload, by curl"
    vs3.delete_object(Bucket="files", Key=key)


def test_virtual_host_large_get_is_redirected(stack):
    """An object too large for a Lambda response, read in virtual-host style: the SDK gets the
    307 (instead of a failed response), and curl -L on a presigned virtual-host URL gets the
    whole object from the backend."""
    big = b"v" * (5 * 1024 * 1024)
    aws("s3", stack["b"]).put_object(Bucket="back-b", Key="files/vh/big.txt", Body=big)
    vs3 = vgw(stack)
    with pytest.raises(ClientError) as e:
        vs3.get_object(Bucket="files", Key="vh/big.txt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 307
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["location"].startswith(
        f"{stack['b']}/back-b/files/vh/big.txt?")
    url = vs3.generate_presigned_url("get_object", Params={"Bucket": "files", "Key": "vh/big.txt"}, ExpiresIn=300)
    r = curl("-L", *harness.resolve_to_loopback(url), "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url)
    assert r.stdout.decode() == f"200 {len(big)}", r
    vs3.delete_object(Bucket="files", Key="vh/big.txt")
    assert_virtual_host(vs3, stack)


def test_health_function_marks_a_stopped_backend_and_placement_avoids_it(stack):
    stack["b_proc"].send_signal(signal.SIGSTOP)
    try:
        r = subprocess.run(
            ["cargo", "lambda", "invoke", "s3-balance-health", "-A", "127.0.0.1",
             "-P", str(stack["health_port"]), "--data-file", FIXTURE],
            cwd=ROOT, capture_output=True, timeout=120, env=stack["env"],
        )
        assert r.returncode == 0, r
        summary = json.loads(r.stdout)
        assert summary["unhealthy"] == ["back-b"], summary
        doc = aws("dynamodb", stack["ddb"]).get_item(
            TableName=TABLE, Key={"pk": {"S": "d"}, "sk": {"S": "health"}}, ConsistentRead=True)
        health = json.loads(doc["Item"]["doc"]["S"])
        assert health["backends"]["back-b"]["healthy"] is False, health
        assert health["backends"]["back-a"]["healthy"] is True, health
        # The HTTP function re-reads the snapshot within its refresh period (5 s).
        time.sleep(6)
        s3 = gw(stack)
        for i in range(4):
            s3.put_object(Bucket="files", Key=f"h{i}.txt", Body=b"x", ContentType="text/plain")
            assert index_entry(stack, f"h{i}.txt")["backend"]["S"] == "back-a"
    finally:
        stack["b_proc"].send_signal(signal.SIGCONT)


def invoke_health(stack):
    r = subprocess.run(
        ["cargo", "lambda", "invoke", "s3-balance-health", "-A", "127.0.0.1",
         "-P", str(stack["health_port"]), "--data-file", FIXTURE],
        cwd=ROOT, capture_output=True, timeout=120, env=stack["env"],
    )
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def admin_call(stack, method, path, body=None, signed=True):
    """An admin API call, signed with the gateway's key (SigV4, JSON body hashed) or anonymous."""
    url = f"{stack['gateway']}/_admin/api{path}"
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"content-type": "application/json"} if body is not None else {}
    if not signed:
        return harness.requests.request(method, url, headers=headers, data=data, timeout=30)
    return harness.signed_request(method, url, GW_KEY, GW_SECRET, headers=headers, data=data)


def test_admin_api_read_only_backend_takes_no_uploads(stack):
    """The core's admin API through the Lambda: the gateway's own key (SigV4) gets in,
    anonymous callers do not; a read-only mark, kept in DynamoDB, keeps uploads off a backend."""
    assert admin_call(stack, "GET", "/buckets", signed=False).status_code == 403
    listing = admin_call(stack, "GET", "/buckets")
    assert listing.status_code == 200, listing.text
    assert [b["name"] for b in listing.json()["buckets"]] == ["back-a", "back-b"]
    # An earlier test stopped back-b: probes on demand see it back at once.
    probed = admin_call(stack, "POST", "/health-check")
    assert probed.status_code == 200, probed.text
    assert [b["available"] for b in probed.json()["buckets"]] == [True, True], probed.text
    s3 = gw(stack)
    try:
        r = admin_call(stack, "PATCH", "/buckets/back-a", {"read_only": True})
        assert r.status_code == 200, r.text
        for i in range(6):
            s3.put_object(Bucket="files", Key=f"admin-ro/{i}", Body=b"x")
        keys = backend_keys(stack)
        assert not [k for k in keys["back-a"] if "admin-ro/" in k]
        assert len([k for k in keys["back-b"] if "admin-ro/" in k]) == 6
    finally:
        cleared = admin_call(stack, "DELETE", "/overrides")
        assert cleared.status_code == 200, cleared.text
    assert admin_call(stack, "GET", "/buckets/back-a").json()["read_only"] is False


@pytest.mark.timeout(600)
def test_drill_with_an_outage_and_the_index_lost_and_rebuilt(stack, tmp_path):
    """The integrity drill (tests/drill.py) through the Lambda: DynamoDB as the index, one
    provider stopped for 5 s, then every index entry of the drill deleted and rebuilt by
    `s3-balance reindex` on the same table while the clients go on."""
    import drill

    invoke_health(stack)  # an earlier test may have left a backend marked down
    time.sleep(6)
    prefix = "drill/"
    reindex_config = tmp_path / "reindex.yaml"
    reindex_config.write_text(
        stack["env"]["S3_BALANCE_CONFIG"] + f"metadata:\n  type: dynamodb\n  table: {TABLE}\n"
    )
    reindexed = []

    def list_real(bucket, endpoint):
        r = aws("s3", endpoint).list_objects_v2(Bucket=bucket, Prefix="files/" + prefix)
        return [o["Key"] for o in r.get("Contents", [])]

    def outage():
        stack["b_proc"].send_signal(signal.SIGSTOP)
        time.sleep(5)
        stack["b_proc"].send_signal(signal.SIGCONT)
        invoke_health(stack)

    def lose_index_and_reindex():
        ddb = aws("dynamodb", stack["ddb"])
        items = ddb.query(
            TableName=TABLE, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": "o#files"}, ":p": {"S": prefix}},
        )["Items"]
        for item in items:
            ddb.delete_item(TableName=TABLE, Key={"pk": item["pk"], "sk": item["sk"]})
        r = subprocess.run(
            [harness.gateway_binary(), "reindex", "--config", str(reindex_config)],
            capture_output=True, text=True, timeout=300, env=stack["env"],
        )
        reindexed.append((len(items), r))

    def settle():
        deadline = time.time() + 90
        while time.time() < deadline:
            invoke_health(stack)  # settles recorded older copies
            keys = [k for ks in backend_keys(stack).values() for k in ks if k.startswith("files/" + prefix)]
            if len(keys) == len(set(keys)):
                return
            time.sleep(1)

    target = drill.Target(
        # The emulator serves one invocation at a time and, under concurrent clients, now and
        # then leaves a response undelivered: a client gives up after 10 s (an ambiguous
        # outcome, which the drill's model allows) instead of botocore's 60 s.
        client=lambda: gw(stack, read_timeout=10, connect_timeout=3),
        backends={
            name: (lambda name=name, ep=ep: list_real(name, ep))
            for name, ep in [("back-a", stack["a"]), ("back-b", stack["b"])]
        },
        real_key=lambda k: "files/" + k,
        faults=[(0.3, "stop a provider", outage), (0.6, "lose the index, reindex", lose_index_and_reindex)],
        settle=settle,
        bucket="files",
        key_prefix=prefix,
        put_args={"ContentType": "application/octet-stream"},
    )
    result = drill.run(target, clients=6, operations=500, keys_per_client=15, max_size=32 * 1024)
    print(result.line())
    assert result.ok(), "\n".join([result.line(), *result.problems])
    assert reindexed and reindexed[0][1].returncode == 0, reindexed
    assert reindexed[0][0] > 0, "the drill's index entries existed before they were deleted"
    assert result.acked > 200, result.line()

