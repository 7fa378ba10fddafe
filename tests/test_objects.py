"""Single-object operations through the gateway: bodies, keys, headers, ranges, conditions."""

import datetime
import hashlib
import urllib.parse

import pytest
from botocore.exceptions import ClientError

import harness as h

SIZES = [0, 1, 10 * 1024 * 1024]
ODD_KEYS = [
    'odd &+-é" %/chars',
    "unicode/日本語/Ünïcödé ✓.txt",
    "emoji/🙂 smile",
    "deep/a/b/c/d/e/f.bin",
    "spaces  and  tabs\there",
    "plus+and=equals?query#hash",
]


def status_of(e: ClientError) -> int:
    return e.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1B", "10MiB"])
def test_put_get_head_delete_by_size(env, s3, prefix, size):
    key = f"{prefix}obj-{size}"
    body = h.payload(size, key)
    put = s3.put_object(Bucket="vb", Key=key, Body=body)
    assert put["ETag"].strip('"') == hashlib.md5(body).hexdigest()

    got = s3.get_object(Bucket="vb", Key=key)
    assert got["Body"].read() == body
    assert got["ContentLength"] == size
    assert got["ETag"] == put["ETag"]

    head = s3.head_object(Bucket="vb", Key=key)
    assert head["ContentLength"] == size
    assert head["ETag"] == put["ETag"]

    # Stored once, under {bucket}/{key}, with the same bytes.
    where = env.vb("vb").placement(key)
    assert len(where) == 1, where
    backend = next(b for b in env.gw.backends if b.name == where[0])
    assert backend.get(f"vb/{key}") == body

    s3.delete_object(Bucket="vb", Key=key)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="vb", Key=key)
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="vb", Key=key)
    assert status_of(e.value) == 404
    assert env.vb("vb").placement(key) == []


@pytest.mark.parametrize("name", ODD_KEYS)
def test_odd_keys_round_trip(env, s3, prefix, name):
    key = prefix + name
    body = f"content of {name}".encode()
    s3.put_object(Bucket="vb", Key=key, Body=body)
    assert s3.get_object(Bucket="vb", Key=key)["Body"].read() == body
    s3.head_object(Bucket="vb", Key=key)
    listed = s3.list_objects_v2(Bucket="vb", Prefix=prefix)
    assert [o["Key"] for o in listed.get("Contents", [])] == [key]
    # The backend holds exactly this key (no double encoding on the way).
    assert len(env.vb("vb").placement(key)) == 1
    s3.delete_object(Bucket="vb", Key=key)
    assert s3.list_objects_v2(Bucket="vb", Prefix=prefix).get("KeyCount", 0) == 0


def test_odd_keys_virtual_host_style(env, prefix):
    """The same keys through virtual-host addressing (vb.s3.test)."""
    vs3 = env.gw.virtual_client()
    for name in ODD_KEYS[:3]:
        key = prefix + name
        vs3.put_object(Bucket="vb", Key=key, Body=name.encode())
        assert vs3.get_object(Bucket="vb", Key=key)["Body"].read() == name.encode()
        assert len(env.vb("vb").placement(key)) == 1
    keys = [o["Key"] for o in vs3.list_objects_v2(Bucket="vb", Prefix=prefix)["Contents"]]
    assert sorted(keys) == sorted(prefix + n for n in ODD_KEYS[:3])


def test_virtual_host_raw_request(env, prefix):
    """A hand-signed virtual-host request, as curl --aws-sigv4 would send it."""
    key = prefix + "raw é.txt"
    host = f"vb.{h.BASE_DOMAIN}:{env.gw.port}"
    url = f"{env.endpoint}/{urllib.parse.quote(key)}"
    r = h.signed_request("PUT", url, data=b"raw body", host=host)
    assert r.status_code == 200, r.text
    r = h.signed_request("GET", url, host=host)
    assert r.status_code == 200, r.text
    assert r.content == b"raw body"
    assert "x-amz-request-id" in {k.lower() for k in r.headers}


def test_metadata_and_content_headers_round_trip(env, s3, prefix):
    key = prefix + "with-headers.html"
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    s3.put_object(
        Bucket="vb",
        Key=key,
        Body=b"<p>hi</p>",
        ContentType="text/html; charset=utf-8",
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="x.html"',
        ContentEncoding="identity",
        ContentLanguage="fr",
        Expires=expires,
        Metadata={"colour": "blue", "owner": "e2e-suite"},
    )
    for response in (s3.head_object(Bucket="vb", Key=key), s3.get_object(Bucket="vb", Key=key)):
        assert response["ContentType"] == "text/html; charset=utf-8"
        assert response["CacheControl"] == "max-age=60"
        assert response["ContentDisposition"] == 'attachment; filename="x.html"'
        assert response["ContentEncoding"] == "identity"
        assert response["ContentLanguage"] == "fr"
        assert response["Metadata"] == {"colour": "blue", "owner": "e2e-suite"}
        assert response["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Wed, 02 Jan 2030 03:04:05 GMT"
    # Response overrides on a signed GET: the gateway sets the headers itself.
    got = s3.get_object(
        Bucket="vb",
        Key=key,
        ResponseContentType="application/octet-stream",
        ResponseContentDisposition='inline; filename="y.bin"',
        ResponseCacheControl="no-store",
        ResponseContentLanguage="de",
    )
    assert got["ContentType"] == "application/octet-stream"
    assert got["ContentDisposition"] == 'inline; filename="y.bin"'
    assert got["CacheControl"] == "no-store"
    assert got["ContentLanguage"] == "de"
    assert got["Body"].read() == b"<p>hi</p>"
    # A list of encodings passes byte for byte (it was rejoined without the space).
    s3.put_object(Bucket="vb", Key=key + ".z", Body=b"z", ContentEncoding="deflate, gzip")
    assert s3.head_object(Bucket="vb", Key=key + ".z")["ContentEncoding"] == "deflate, gzip"


def test_content_md5_accepted(env, s3, prefix):
    # (A wrong Content-MD5 is the backend's to refuse, and moto does not check it: not tested.)
    import base64

    key = prefix + "md5"
    good = base64.b64encode(hashlib.md5(b"hello").digest()).decode()
    s3.put_object(Bucket="vb", Key=key, Body=b"hello", ContentMD5=good)
    assert s3.get_object(Bucket="vb", Key=key)["Body"].read() == b"hello"


def test_range_requests(env, s3, prefix):
    key = prefix + "ranged"
    body = h.payload(100_000, key)
    s3.put_object(Bucket="vb", Key=key, Body=body)

    first = s3.get_object(Bucket="vb", Key=key, Range="bytes=0-99")
    assert first["Body"].read() == body[:100]
    assert first["ContentRange"] == "bytes 0-99/100000"
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 206

    middle = s3.get_object(Bucket="vb", Key=key, Range="bytes=5000-5999")
    assert middle["Body"].read() == body[5000:6000]
    assert middle["ContentLength"] == 1000

    suffix = s3.get_object(Bucket="vb", Key=key, Range="bytes=-500")
    assert suffix["Body"].read() == body[-500:]
    assert suffix["ContentRange"] == "bytes 99500-99999/100000"

    open_end = s3.get_object(Bucket="vb", Key=key, Range="bytes=99990-")
    assert open_end["Body"].read() == body[99990:]

    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="vb", Key=key, Range="bytes=200000-300000")
    assert status_of(e.value) == 416
    assert e.value.response["Error"]["Code"] == "InvalidRange"


def test_conditional_requests(env, s3, prefix):
    key = prefix + "conditional"
    etag = s3.put_object(Bucket="vb", Key=key, Body=b"v1")["ETag"]

    # If-None-Match with the current ETag: 304 Not Modified.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="vb", Key=key, IfNoneMatch=etag)
    assert status_of(e.value) == 304
    # If-Match with another ETag: 412 Precondition Failed.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="vb", Key=key, IfMatch='"0123456789abcdef0123456789abcdef"')
    assert status_of(e.value) == 412
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    # Matching conditions pass.
    assert s3.get_object(Bucket="vb", Key=key, IfMatch=etag)["Body"].read() == b"v1"
    assert s3.get_object(Bucket="vb", Key=key, IfNoneMatch='"nope"')["Body"].read() == b"v1"
    # HEAD too (no body, status only).
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="vb", Key=key, IfNoneMatch=etag)
    assert status_of(e.value) == 304
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="vb", Key=key, IfUnmodifiedSince=past)
    assert status_of(e.value) == 412


def test_overwrite_keeps_one_copy(env, s3, prefix):
    key = prefix + "overwritten"
    for i in range(5):
        s3.put_object(Bucket="vb", Key=key, Body=f"version {i}".encode())
        assert len(env.vb("vb").placement(key)) == 1
    assert s3.get_object(Bucket="vb", Key=key)["Body"].read() == b"version 4"


def test_errors_are_s3_xml(env, s3, prefix):
    r = h.signed_request("GET", f"{env.endpoint}/vb/{prefix}missing")
    assert r.status_code == 404
    assert h.error_code(r) == "NoSuchKey"
    assert "<RequestId>" in r.text
    assert r.headers.get("x-amz-request-id")
    r = h.signed_request("GET", f"{env.endpoint}/no-such-bucket/x")
    assert r.status_code == 404
    assert h.error_code(r) == "NoSuchBucket"
    r = h.signed_request("HEAD", f"{env.endpoint}/vb/{prefix}missing")
    assert r.status_code == 404
    assert r.content == b""


def test_unimplemented_subresource_does_not_overwrite(env, s3, prefix):
    key = prefix + "tagged"
    s3.put_object(Bucket="vb", Key=key, Body=b"keep me")
    xml = b"<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>"
    r = h.signed_request("PUT", f"{env.endpoint}/vb/{prefix}tagged?tagging", data=xml)
    # Either implemented (200) or refused (501): never an overwrite of the object.
    assert r.status_code in (200, 501), r.text
    if r.status_code == 501:
        assert h.error_code(r) == "NotImplemented"
    assert s3.get_object(Bucket="vb", Key=key)["Body"].read() == b"keep me"


def test_list_buckets_and_head_bucket(env, s3):
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    for vb in ("vb", "lists", "flat", "redir"):
        assert vb in names
    # Real buckets are not shown as virtual buckets.
    assert "real-one" not in names
    # Paged as AWS pages it (boto3's paginator follows ContinuationToken), and filtered.
    pages = list(s3.get_paginator("list_buckets").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) == -(-len(names) // 2)
    assert [b["Name"] for p in pages for b in p["Buckets"]] == names
    assert [b["Name"] for b in s3.list_buckets(Prefix="fl")["Buckets"]] == ["flat"]
    r = h.signed_request("GET", f"{env.endpoint}/?max-buckets=0")  # boto3 refuses it itself
    assert r.status_code == 400 and h.error_code(r) == "InvalidArgument", r.text
    s3.head_bucket(Bucket="vb")
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="no-such-bucket")
    assert status_of(e.value) == 404


def test_health_and_metrics_endpoints(env, s3, prefix):
    import requests

    r = requests.get(env.endpoint + "/health", timeout=5)
    assert r.status_code == 200
    s3.put_object(Bucket="vb", Key=prefix + "m", Body=b"m")
    text = env.gw.metrics()
    for b in ("b1", "b2", "b3"):
        assert h.metric_value(text, "s3_balance_bucket_healthy", bucket=b) == 1.0, text[:2000]
    assert "s3_balance_s3_operations_total" in text
    import shutil
    import subprocess

    if not shutil.which("promtool"):
        h.missing("promtool not found (apt-get install prometheus)")
    else:
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        # promtool exits 1 for lint warnings (e.g. counter naming); 3+ for parse errors.
        assert "error while linting" not in check.stderr and check.returncode in (0, 1), check.stderr


def test_chunked_put_without_length_is_411_and_writes_nothing(env, s3, prefix):
    """S3 needs an object's length up front: a PUT sent with `Transfer-Encoding: chunked` and no
    Content-Length is `411 MissingContentLength`, as AWS answers (README, compatibility notes)."""
    import requests

    key = prefix + "chunked"
    url = h.presigned_url("PUT", f"{env.gw.endpoint}/vb/{urllib.parse.quote(key)}", h.ADMIN_KEY, h.ADMIN_SECRET, 300)
    r = requests.put(url, data=iter([b"abc", b"def"]), timeout=30)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert (r.status_code, h.error_code(r)) == (411, "MissingContentLength")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="vb", Key=key)
    assert status_of(e.value) == 404
