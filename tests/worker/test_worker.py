"""End-to-end tests of the Worker under workerd (`wrangler dev`, local mode) over two moto S3
backends. Run: `scripts/install-worker-tools && python -m pytest tests/worker -q`.

Excluded, because the platform forces it:
- Real Workers KV propagation delay (60 s+ between locations) cannot happen in local KV, which
  is consistent: it is simulated by deleting or corrupting the index entry (test route and
  `wrangler kv key delete --local`), which is what a lagging replica looks like to a read.
- The 1 write/s/key KV limit and the 50-subrequest limit are not enforced by workerd locally;
  the code paths that respect them (approximate usage, scan budget) run, but their limits
  are not provoked.
- Bodies over the real plan limit (100 MB) are not sent: the limit is lowered through the
  var S3_BALANCE_MAX_BODY_BYTES to keep the test fast; the same check applies.
"""

import hashlib
import os
import subprocess
import time

import botocore
import pytest
import requests

from conftest import ACCESS_KEY, ADMIN_TOKEN, MAX_BODY, ROOT, WRANGLER, config_yaml, start_gateway, stop_gateway


def body(n, seed=b"x"):
    return (hashlib.sha256(seed).digest() * (n // 32 + 1))[:n]


def where(motos, key, bucket="photos"):
    """Names of the backends holding the virtual object `bucket/key`."""
    return [m.name for m in motos.values() if f"{bucket}/{key}" in m.keys()]


def s3_code(exc):
    return exc.value.response["Error"]["Code"]


# --- basics -----------------------------------------------------------------------------


def test_health_and_metrics(gateway, s3):
    r = requests.get(f"{gateway.url}/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers.get("x-amz-request-id")
    s3.put_object(Bucket="photos", Key="metrics/k", Body=b"m")
    m = requests.get(f"{gateway.url}/metrics", timeout=10)
    assert m.status_code == 200
    # The isolate that served the PUT counts it (workerd runs one isolate locally).
    assert 's3_balance_s3_operations_total{operation="PutObject",status="success"}' in m.text, m.text[:3000]
    assert 's3_balance_s3_operation_duration_seconds_count{operation="PutObject"}' in m.text


def test_put_get_head_delete(s3, motos):
    data = body(100_000)
    s3.put_object(Bucket="photos", Key="dir/one.bin", Body=data, ContentType="image/jpeg", Metadata={"owner": "ann"})
    assert len(where(motos, "dir/one.bin")) == 1, "stored on exactly one backend under photos/"
    got = s3.get_object(Bucket="photos", Key="dir/one.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/jpeg"
    assert got["Metadata"] == {"owner": "ann"}
    head = s3.head_object(Bucket="photos", Key="dir/one.bin")
    assert head["ContentLength"] == len(data)
    ranged = s3.get_object(Bucket="photos", Key="dir/one.bin", Range="bytes=10-19")
    assert ranged["Body"].read() == data[10:20]
    s3.delete_object(Bucket="photos", Key="dir/one.bin")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket="photos", Key="dir/one.bin")
    assert s3_code(e) == "NoSuchKey"
    assert where(motos, "dir/one.bin") == []


def test_unicode_key_and_empty_object(s3):
    key = "naïve dir/ü + & ? = #.txt"
    s3.put_object(Bucket="photos", Key=key, Body=b"")
    assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == b""
    s3.delete_object(Bucket="photos", Key=key)


def test_list_with_pages_and_delimiter(s3):
    keys = [f"list/{d}/{i:02}" for d in ("a", "b") for i in range(6)] + ["list/top"]
    for k in keys:
        s3.put_object(Bucket="photos", Key=k, Body=k.encode())
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket="photos", Prefix="list/", MaxKeys=5, **kw)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(keys), "paged listing merges both backends exactly"
    d = s3.list_objects_v2(Bucket="photos", Prefix="list/", Delimiter="/")
    assert [p["Prefix"] for p in d["CommonPrefixes"]] == ["list/a/", "list/b/"]
    assert [o["Key"] for o in d["Contents"]] == ["list/top"]
    s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": k} for k in keys]})
    assert s3.list_objects_v2(Bucket="photos", Prefix="list/").get("KeyCount") == 0


def test_copy(s3):
    s3.put_object(Bucket="photos", Key="copy/src", Body=b"copied bytes")
    s3.copy_object(Bucket="photos", Key="copy/dst", CopySource={"Bucket": "photos", "Key": "copy/src"})
    assert s3.get_object(Bucket="photos", Key="copy/dst")["Body"].read() == b"copied bytes"



def test_multipart_parts_stream_to_one_backend_and_abort(s3, motos):
    part = 5 * 1024 * 1024
    up = s3.create_multipart_upload(Bucket="photos", Key="mp/aborted")
    uid = up["UploadId"]
    for i, data in enumerate([body(part, b"1"), body(1000, b"2")], start=1):
        assert s3.upload_part(Bucket="photos", Key="mp/aborted", UploadId=uid, PartNumber=i, Body=data)["ETag"]
    holders = [m.name for m in motos.values() if any(u["Key"] == "photos/mp/aborted" for u in m.client.list_multipart_uploads(Bucket=m.bucket).get("Uploads", []))]
    assert len(holders) == 1, "the upload lives on one backend, named by the UploadId"
    s3.abort_multipart_upload(Bucket="photos", Key="mp/aborted", UploadId=uid)
    assert all(not m.client.list_multipart_uploads(Bucket=m.bucket).get("Uploads") for m in motos.values())


def test_multipart_complete(s3, motos):
    part = 5 * 1024 * 1024
    parts_data = [body(part, b"1"), body(part, b"2"), body(1000, b"3")]
    uid = s3.create_multipart_upload(Bucket="photos", Key="mp/big.bin")["UploadId"]
    etags = [
        s3.upload_part(Bucket="photos", Key="mp/big.bin", UploadId=uid, PartNumber=i, Body=data)["ETag"]
        for i, data in enumerate(parts_data, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket="photos",
        Key="mp/big.bin",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, start=1)]},
    )
    assert s3.get_object(Bucket="photos", Key="mp/big.bin")["Body"].read() == b"".join(parts_data)
    assert len(where(motos, "mp/big.bin")) == 1


def test_body_over_the_plan_limit_is_refused_before_any_backend(s3, motos):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket="photos", Key="too/big", Body=body(MAX_BODY + 1))
    assert s3_code(e) == "EntityTooLarge"
    assert where(motos, "too/big") == []


def test_list_parts(s3):
    uid = s3.create_multipart_upload(Bucket="photos", Key="mp/parts")["UploadId"]
    s3.upload_part(Bucket="photos", Key="mp/parts", UploadId=uid, PartNumber=1, Body=b"p" * 100)
    listed = s3.list_parts(Bucket="photos", Key="mp/parts", UploadId=uid)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1]
    s3.abort_multipart_upload(Bucket="photos", Key="mp/parts", UploadId=uid)


# --- auth ---------------------------------------------------------------------------------


def test_auth_errors(gateway):
    bad = gateway.client(secret_key="wrong-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_objects_v2(Bucket="photos")
    assert s3_code(e) == "SignatureDoesNotMatch"
    unknown = gateway.client(access_key="AKIDUNKNOWN000000000")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.list_objects_v2(Bucket="photos")
    assert s3_code(e) == "InvalidAccessKeyId"
    r = requests.get(f"{gateway.url}/photos/anything", timeout=10)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    assert r.headers.get("x-amz-request-id")
    r = requests.put(f"{gateway.url}/photos/x?tagging", data=b"<Tagging/>", timeout=10)
    assert r.status_code in (403, 501)


def test_not_implemented_never_falls_through(s3):
    s3.put_object(Bucket="photos", Key="tagged", Body=b"keep me")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object_tagging(Bucket="photos", Key="tagged", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert s3_code(e) == "NotImplemented"
    assert s3.get_object(Bucket="photos", Key="tagged")["Body"].read() == b"keep me"


# --- redirect -----------------------------------------------------------------------------


def test_redirect_mode_with_curl(gateway, s3):
    """`reads: auto` on a public bucket: anonymous readers (curl, browsers) get a 307 to a
    presigned backend URL; signed SDK traffic is proxied."""
    s3.put_object(Bucket="public", Key="img/cat.txt", Body=b"meow")
    r = requests.get(f"{gateway.url}/public/img/cat.txt", allow_redirects=False, timeout=10)
    assert r.status_code == 307
    assert "X-Amz-Signature=" in r.headers["location"]
    out = subprocess.run(["curl", "-sS", "-L", "--fail", f"{gateway.url}/public/img/cat.txt"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"meow"
    # Signed SDK traffic on the same bucket is proxied (SDKs do not follow redirects).
    assert s3.get_object(Bucket="public", Key="img/cat.txt")["Body"].read() == b"meow"


# --- index is a hint: KV lag ------------------------------------------------------------------


def test_read_after_write_with_a_lost_index_entry(gateway, s3, motos):
    s3.put_object(Bucket="photos", Key="lag/a", Body=b"fresh")
    r = requests.get(f"{gateway.url}/__test/index", params={"bucket": "photos", "key": "lag/a"}, timeout=10)
    assert r.json() and r.json()["backend"] in motos
    # What a KV replica that has not seen the write answers: nothing.
    assert requests.delete(f"{gateway.url}/__test/index", params={"bucket": "photos", "key": "lag/a"}, timeout=10).ok
    assert s3.get_object(Bucket="photos", Key="lag/a")["Body"].read() == b"fresh"
    # The probe repaired the index.
    r = requests.get(f"{gateway.url}/__test/index", params={"bucket": "photos", "key": "lag/a"}, timeout=10)
    assert r.json() is not None


def test_read_with_a_stale_index_entry(gateway, s3, motos):
    s3.put_object(Bucket="photos", Key="lag/b", Body=b"right one")
    holder = where(motos, "lag/b")[0]
    other = next(n for n in motos if n != holder)
    assert requests.put(
        f"{gateway.url}/__test/index", params={"bucket": "photos", "key": "lag/b", "backend": other}, timeout=10
    ).ok
    assert s3.get_object(Bucket="photos", Key="lag/b")["Body"].read() == b"right one"


def test_index_entry_deleted_with_wrangler_kv(gateway, s3):
    s3.put_object(Bucket="photos", Key="lag/c", Body=b"via wrangler")
    gateway.wrangler(
        "kv", "key", "delete", "--binding", "S3_BALANCE_KV", "o/photos/lag/c", "--local", "--persist-to", str(gateway.state_dir)
    )
    r = requests.get(f"{gateway.url}/__test/index", params={"bucket": "photos", "key": "lag/c"}, timeout=10)
    assert r.json() is None, "the entry is gone from the Worker's view of KV"
    assert s3.get_object(Bucket="photos", Key="lag/c")["Body"].read() == b"via wrangler"


# --- KV store contract inside workerd ---------------------------------------------------------


def test_kv_store_contract(gateway):
    r = requests.get(f"{gateway.url}/__test/kv-contract", timeout=120)
    assert r.status_code == 200, gateway.log_text()[-3000:]
    assert r.text.startswith("ok")


# --- hot switch -----------------------------------------------------------------------------------


def test_hot_switch_through_kv(gateway, s3, motos, tmp_path):
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_bucket(Bucket="hot")
    path = tmp_path / "config.yaml"
    path.write_text(config_yaml(motos, extra_bucket="hot"))
    gateway.wrangler(
        "kv", "key", "put", "--binding", "S3_BALANCE_KV", "config", "--path", str(path), "--local", "--persist-to", str(gateway.state_dir)
    )
    # The isolate re-reads the key at most every 5 s.
    deadline = time.time() + 20
    while True:
        try:
            s3.head_bucket(Bucket="hot")
            break
        except botocore.exceptions.ClientError:
            if time.time() > deadline:
                raise
            time.sleep(1)
    s3.put_object(Bucket="hot", Key="k", Body=b"hot")
    assert s3.get_object(Bucket="hot", Key="k")["Body"].read() == b"hot"
    gateway.wrangler(
        "kv", "key", "delete", "--binding", "S3_BALANCE_KV", "config", "--local", "--persist-to", str(gateway.state_dir)
    )


# --- cron: health --------------------------------------------------------------------------------


def scheduled(gateway):
    r = requests.get(f"{gateway.url}/__scheduled", params={"cron": "*/5 * * * *"}, timeout=60)
    assert r.status_code == 200, r.text


def health(gateway):
    return requests.get(f"{gateway.url}/health", timeout=10).json()["backends"]


def test_cron_marks_a_stopped_backend_unhealthy_and_placement_avoids_it(gateway, s3, motos):
    scheduled(gateway)
    assert all(h["healthy"] for h in health(gateway).values())
    motos["b"].stop()
    try:
        scheduled(gateway)  # probe timeout 2 s, fall 1
        state = health(gateway)
        assert state["b"]["healthy"] is False, state
        assert state["a"]["healthy"] is True
        for i in range(6):
            s3.put_object(Bucket="photos", Key=f"avoid/{i}", Body=b"x")
        # b is stopped: list only a (b would hang).
        on_a = [k for k in motos["a"].keys() if k.startswith("photos/avoid/")]
        assert len(on_a) == 6, "every new object went to the healthy backend"
    finally:
        motos["b"].resume()
    scheduled(gateway)
    assert health(gateway)["b"]["healthy"] is True, "rise 1: healthy again after one good probe"
    assert [k for k in motos["b"].keys() if k.startswith("photos/avoid/")] == []


def test_cron_scan_sets_usage(gateway, s3):
    s3.put_object(Bucket="photos", Key="usage/one", Body=body(1234))
    scheduled(gateway)
    m = requests.get(f"{gateway.url}/metrics", timeout=10).text
    usage = [line for line in m.splitlines() if line.startswith("s3_balance_bucket_usage_bytes")]
    assert usage and sum(float(line.rsplit(" ", 1)[1]) for line in usage) >= 1234, m


def test_admin_api_read_only_backend_takes_no_uploads_and_kv_keeps_the_change(gateway, s3, motos):
    """The core's admin API through the Worker: the token (a Worker secret through ${ADMIN_TOKEN})
    gets in, anonymous callers do not; a read-only mark keeps new uploads off a backend and is
    kept in KV for every isolate."""
    api = f"{gateway.url}/_admin/api"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert requests.get(f"{api}/buckets", timeout=10).status_code == 403
    listing = requests.get(f"{api}/buckets", headers=auth, timeout=10).json()
    assert [b["name"] for b in listing["buckets"]] == ["a", "b"]
    assert requests.get(f"{gateway.url}/_admin/", timeout=10).text.count("S3 Balance console") == 1
    try:
        r = requests.patch(f"{api}/buckets/a", json={"read_only": True}, headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        for i in range(6):
            s3.put_object(Bucket="photos", Key=f"admin-ro/{i}", Body=b"x")
        assert not [k for k in motos["a"].keys() if k.startswith("photos/admin-ro/")]
        assert len([k for k in motos["b"].keys() if k.startswith("photos/admin-ro/")]) == 6
        stored = gateway.wrangler("kv", "key", "get", "--binding", "S3_BALANCE_KV", "--local",
                                  "--persist-to", str(gateway.state_dir), "d/admin-overrides").stdout
        assert '"read_only":true' in stored, stored
    finally:
        cleared = requests.delete(f"{api}/overrides", headers=auth, timeout=10)
        assert cleared.status_code == 200, cleared.text
    assert requests.get(f"{api}/buckets/a", headers=auth, timeout=10).json()["read_only"] is False
    # Every other call answers on the Worker as on the server.
    assert requests.get(f"{api}/health", headers=auth, timeout=10).json()["status"] in ("healthy", "degraded")
    vb = requests.get(f"{api}/virtual-buckets", headers=auth, timeout=10).json()["virtual_buckets"]
    assert {"photos", "public"} <= {v["name"] for v in vb}
    try:
        assert requests.put(f"{api}/strategy", json={"strategy": "least-space"}, headers=auth, timeout=10).json() == {"strategy": "least-space"}
        assert requests.get(f"{api}/overrides", headers=auth, timeout=10).json() == {"strategy": "least-space"}
    finally:
        requests.delete(f"{api}/overrides", headers=auth, timeout=10)
    probed = requests.post(f"{api}/health-check", headers=auth, timeout=30).json()
    assert all(b["health_history"] for b in probed["buckets"])
    assert requests.post(f"{api}/usage-scan", headers=auth, timeout=60).status_code == 200
    assert requests.get(f"{api}/moves", headers=auth, timeout=10).status_code == 200


def test_admin_drain_runs_in_bounded_steps_and_the_cron_finishes_it(bundle, motos, tmp_path):
    """A drain started through the admin API on the Worker: each call and each cron run moves a
    few objects within the subrequest budget; in the end the backend holds none of them and
    each reads back its bytes. (A gateway of its own: its KV index holds only these objects.)"""
    gw = start_gateway(bundle, motos, tmp_path)
    try:
        s3 = gw.client()
        bodies = {f"wdrain/{i:02d}": f"worker-drain-{i}".encode() * (i + 1) for i in range(14)}
        for key, data in bodies.items():
            s3.put_object(Bucket="photos", Key=key, Body=data)
        on_a = [k for k in motos["a"].keys() if k.startswith("photos/wdrain/")]
        assert on_a, "round-robin put some on a"
        time.sleep(2)
        api = f"{gw.url}/_admin/api"
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        r = requests.post(f"{api}/drain/a", json={"settle_secs": 1}, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["goal"] == {"Drain": "a"} and r.json()["driver"] == "Scheduled"
        for _ in range(40):
            if requests.get(f"{api}/moves", headers=auth, timeout=10).json()["done"]:
                break
            scheduled(gw)
        run = requests.get(f"{api}/moves", headers=auth, timeout=10).json()
        assert run["done"] and run["left"] == 0 and run["moved"] == len(on_a), run
        assert not [k for k in motos["a"].keys() if k.startswith("photos/wdrain/")]
        for key, data in bodies.items():
            assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == data
        assert requests.get(f"{api}/buckets/a", headers=auth, timeout=10).json()["read_only"] is True
        # A rebalance started and stopped; a step of a finished run does nothing.
        started = requests.post(f"{api}/rebalance", json={"settle_secs": 1}, headers=auth, timeout=60)
        assert started.status_code == 200 and started.json()["goal"] == "Rebalance", started.text
        assert requests.delete(f"{api}/moves", headers=auth, timeout=10).json()["done"] is True
        assert requests.post(f"{api}/moves/step", headers=auth, timeout=60).json()["done"] is True
    finally:
        stop_gateway(gw)


# --- packaging ----------------------------------------------------------------------------------


def test_wrangler_deploy_dry_run(tmp_path):
    """The production wrangler.toml bundles (runs scripts/build-worker, then a dry-run deploy)."""
    out = subprocess.run(
        [str(WRANGLER), "deploy", "--dry-run", "--outdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "1"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert any(p.suffix == ".wasm" for p in tmp_path.rglob("*")), list(tmp_path.rglob("*"))


def test_the_production_bundle_has_no_test_routes(motos, tmp_path):
    """The bundle `wrangler deploy` ships (scripts/build-worker, without the `test-routes`
    feature) does not serve `/__test/`, even with the var that enables them set: such a path
    is an S3 request like any other. The test bundle answers the same request 200
    (test_kv_store_contract)."""
    from conftest import PRODUCTION_SHIM, start_gateway, stop_gateway

    if not PRODUCTION_SHIM.exists():  # test_wrangler_deploy_dry_run built it, unless deselected
        subprocess.run([str(ROOT / "scripts" / "build-worker")], check=True, cwd=ROOT, timeout=900)
    gw = start_gateway(PRODUCTION_SHIM, motos, tmp_path)
    try:
        assert requests.get(f"{gw.url}/health", timeout=30).status_code == 200
        for method, path in (("GET", "/__test/kv-contract"), ("DELETE", "/__test/index?bucket=photos&key=k")):
            r = requests.request(method, f"{gw.url}{path}", timeout=30)
            # An S3 answer about a bucket named `__test` (no such bucket), not a test route.
            assert r.status_code in (400, 403, 404), (method, path, r.status_code, r.text)
            assert "<Error><Code>" in r.text, r.text
    finally:
        stop_gateway(gw)


# --- index off: serving writes KV not at all ----------------------------------------------------


def test_index_off_mode_writes_no_kv(bundle, motos, tmp_path):
    import json

    from conftest import start_gateway, stop_gateway

    gw = start_gateway(bundle, motos, tmp_path, index="off", strategy="consistent-hash")
    try:
        s3 = gw.client()
        for i in range(4):
            s3.put_object(Bucket="photos", Key=f"noindex/{i}", Body=f"v{i}".encode())
        s3.put_object(Bucket="photos", Key="noindex/0", Body=b"overwritten")
        assert s3.get_object(Bucket="photos", Key="noindex/0")["Body"].read() == b"overwritten"
        assert len(where(motos, "noindex/0")) == 1, "consistent-hash puts an overwrite where the key lives"
        assert s3.get_object(Bucket="photos", Key="noindex/3")["Body"].read() == b"v3"
        s3.delete_object(Bucket="photos", Key="noindex/1")
        out = gw.wrangler("kv", "key", "list", "--binding", "S3_BALANCE_KV", "--local", "--persist-to", str(gw.state_dir))
        names = [k["name"] for k in json.loads(out.stdout)]
        assert names == [], f"serving wrote KV keys: {names}"
    finally:
        stop_gateway(gw)
