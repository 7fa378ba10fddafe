"""Authentication and authorisation: each refusal carries AWS's error code, and nothing is
written to any backend."""

import datetime
import urllib.parse
from urllib.parse import quote

import pytest
import requests
from botocore.exceptions import ClientError

import harness as h


def assert_nothing_written(env, bucket, key):
    assert env.vb(bucket).placement(key) == [], f"{key} was written despite the refusal"


def refused(response, status, code):
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert h.error_code(response) == code, response.text[:500]
    assert h.ADMIN_SECRET not in response.text


def test_wrong_secret(env, prefix):
    key = prefix + "wrong-secret"
    r = h.signed_request("PUT", f"{env.endpoint}/vb/{key}", h.ADMIN_KEY, "not-the-secret", data=b"x")
    refused(r, 403, "SignatureDoesNotMatch")
    assert_nothing_written(env, "vb", key)
    # Also via boto3.
    bad = env.gw.client(secret="not-the-secret")
    with pytest.raises(ClientError) as e:
        bad.put_object(Bucket="vb", Key=key, Body=b"x")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert_nothing_written(env, "vb", key)


def test_unknown_access_key(env, prefix):
    key = prefix + "unknown-key"
    r = h.signed_request("PUT", f"{env.endpoint}/vb/{key}", "AKIANOSUCHKEY0000000", "whatever", data=b"x")
    refused(r, 403, "InvalidAccessKeyId")
    assert_nothing_written(env, "vb", key)


def test_tampered_signed_header(env, prefix):
    key = prefix + "tampered"

    def tamper(headers):
        headers["x-amz-meta-note"] = "changed after signing"

    r = h.signed_request(
        "PUT", f"{env.endpoint}/vb/{key}", data=b"x", headers={"x-amz-meta-note": "signed"}, tamper=tamper
    )
    refused(r, 403, "SignatureDoesNotMatch")
    assert_nothing_written(env, "vb", key)


def test_tampered_body(env, prefix):
    """Signed for one body, sent with another: the payload hash no longer matches."""
    key = prefix + "tampered-body"

    url = f"{env.endpoint}/vb/{key}"
    signed = h.signed_request("PUT", url, data=b"original")
    assert signed.status_code == 200
    env.gw.client().delete_object(Bucket="vb", Key=key)

    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    import hashlib

    req = botocore.awsrequest.AWSRequest(
        method="PUT", url=url, data=b"original",
        headers={"x-amz-content-sha256": hashlib.sha256(b"original").hexdigest()},
    )
    creds = botocore.credentials.Credentials(h.ADMIN_KEY, h.ADMIN_SECRET)
    botocore.auth.S3SigV4Auth(creds, "s3", h.REGION).add_auth(req)
    r = requests.put(url, data=b"EVIL!!!!", headers=dict(req.headers.items()), timeout=30)
    assert r.status_code in (400, 403), r.text
    assert h.error_code(r) in ("XAmzContentSHA256Mismatch", "BadDigest", "SignatureDoesNotMatch"), r.text
    assert_nothing_written(env, "vb", key)


def test_tampered_query(env, s3, prefix):
    s3.put_object(Bucket="vb", Key=prefix + "a", Body=b"a")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "vb", "Key": prefix + "a"}, ExpiresIn=300)
    r = requests.get(url.replace(urllib.parse.quote(prefix) + "a", urllib.parse.quote(prefix) + "b"), timeout=10)
    refused(r, 403, "SignatureDoesNotMatch")


def test_expired_presigned_url(env, s3, prefix, monkeypatch):
    key = prefix + "expiring"
    s3.put_object(Bucket="vb", Key=key, Body=b"old news")
    # Signed an hour ago for 60 seconds.
    an_hour_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    url = h.presigned_url("GET", f"{env.endpoint}/vb/{quote(key)}", h.ADMIN_KEY, h.ADMIN_SECRET, 60, now=an_hour_ago)
    assert "X-Amz-Date=" + an_hour_ago.strftime("%Y%m%dT%H") in url
    r = requests.get(url, timeout=10, allow_redirects=False)
    refused(r, 403, "AccessDenied")
    assert "expired" in r.text.lower()
    # A presigned PUT that expired writes nothing.
    put_url = h.presigned_url("PUT", f"{env.endpoint}/vb/{quote(key)}-put", h.ADMIN_KEY, h.ADMIN_SECRET, 60, now=an_hour_ago)
    r = requests.put(put_url, data=b"late", timeout=10)
    refused(r, 403, "AccessDenied")
    assert_nothing_written(env, "vb", key + "-put")


def test_presigned_expiry_over_seven_days(env, s3, prefix):
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "vb", "Key": prefix + "x"}, ExpiresIn=8 * 86400)
    r = requests.get(url, timeout=10)
    assert r.status_code in (400, 403)
    assert h.error_code(r) in ("AuthorizationQueryParametersError", "AccessDenied")


def test_skewed_clock(env, prefix):
    key = prefix + "skewed"
    skewed = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    r = h.signed_request("PUT", f"{env.endpoint}/vb/{key}", data=b"x", now=skewed)
    refused(r, 403, "RequestTimeTooSkewed")
    assert_nothing_written(env, "vb", key)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=20)
    r = h.signed_request("PUT", f"{env.endpoint}/vb/{key}", data=b"x", now=future)
    refused(r, 403, "RequestTimeTooSkewed")
    # Within the 15-minute window: accepted.
    slightly = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    r = h.signed_request("GET", f"{env.endpoint}/vb?list-type=2&prefix={quote(prefix, safe='')}", now=slightly)
    assert r.status_code == 200, r.text


def test_unencoded_query_value_signed(env, prefix):
    """SigV4 canonicalises query values URI-encoded, whatever the client sent: a `/` left raw in
    the query (as a hand-written URL has it) must verify like its encoded form."""
    r = h.signed_request("GET", f"{env.endpoint}/vb?list-type=2&prefix={prefix}")
    assert r.status_code == 200, r.text


def test_key_limited_to_some_buckets(env, prefix):
    limited = env.gw.client(h.LIMITED_KEY, h.LIMITED_SECRET)
    limited.put_object(Bucket="limited", Key=prefix + "ok", Body=b"ok")
    assert limited.get_object(Bucket="limited", Key=prefix + "ok")["Body"].read() == b"ok"

    key = prefix + "outside"
    for call in (
        lambda: limited.put_object(Bucket="vb", Key=key, Body=b"x"),
        lambda: limited.get_object(Bucket="vb", Key=key),
        lambda: limited.list_objects_v2(Bucket="vb"),
        lambda: limited.delete_object(Bucket="vb", Key=key),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert_nothing_written(env, "vb", key)
    # A copy from a bucket it may not read into one it may write is refused too.
    env.gw.client().put_object(Bucket="vb", Key=prefix + "src", Body=b"private")
    with pytest.raises(ClientError) as e:
        limited.copy_object(Bucket="limited", Key=prefix + "stolen", CopySource={"Bucket": "vb", "Key": prefix + "src"})
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert_nothing_written(env, "limited", prefix + "stolen")
    # ListBuckets shows it only its buckets.
    names = [b["Name"] for b in limited.list_buckets()["Buckets"]]
    assert names == ["limited"]


def test_read_only_key(env, s3, prefix):
    s3.put_object(Bucket="vb", Key=prefix + "readable", Body=b"r")
    ro = env.gw.client(h.READONLY_KEY, h.READONLY_SECRET)
    assert ro.get_object(Bucket="vb", Key=prefix + "readable")["Body"].read() == b"r"
    assert ro.list_objects_v2(Bucket="vb", Prefix=prefix)["KeyCount"] == 1

    key = prefix + "ro-write"
    for call in (
        lambda: ro.put_object(Bucket="vb", Key=key, Body=b"x"),
        lambda: ro.create_multipart_upload(Bucket="vb", Key=key),
        lambda: ro.copy_object(Bucket="vb", Key=key, CopySource={"Bucket": "vb", "Key": prefix + "readable"}),
        lambda: ro.delete_object(Bucket="vb", Key=prefix + "readable"),
        lambda: ro.delete_objects(Bucket="vb", Delete={"Objects": [{"Key": prefix + "readable"}]}),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDenied", e.value.response
    assert_nothing_written(env, "vb", key)
    # Nothing deleted either.
    assert s3.get_object(Bucket="vb", Key=prefix + "readable")["Body"].read() == b"r"


def test_anonymous_request_refused(env, prefix):
    r = requests.put(f"{env.endpoint}/vb/{prefix}anon", data=b"x", timeout=10)
    refused(r, 403, "AccessDenied")
    assert_nothing_written(env, "vb", prefix + "anon")
    # As AWS: an anonymous caller learns that a bucket does not exist (404) before being
    # refused (403) by one that does.
    refused(requests.get(f"{env.endpoint}/vb/{prefix}missing", timeout=10), 403, "AccessDenied")
    refused(requests.get(f"{env.endpoint}/no-such-bucket/k", timeout=10), 404, "NoSuchBucket")
    refused(requests.put(f"{env.endpoint}/no-such-bucket/k", data=b"x", timeout=10), 404, "NoSuchBucket")


def test_presigned_expiry_values_get_aws_answers(env, s3, prefix):
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "vb", "Key": prefix + "e"}, ExpiresIn=300)
    assert "X-Amz-Expires=300" in url
    for value, status, code, message in [
        ("-7", 400, "AuthorizationQueryParametersError", "X-Amz-Expires must be non-negative"),
        ("soon", 400, "AuthorizationQueryParametersError", "X-Amz-Expires should be a number"),
        ("604801", 400, "AuthorizationQueryParametersError",
         "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds"),
        ("0", 403, "AccessDenied", "Request has expired"),
    ]:
        r = requests.get(url.replace("X-Amz-Expires=300", f"X-Amz-Expires={value}"), timeout=10)
        refused(r, status, code)
        assert f"<Message>{message}</Message>" in r.text, (value, r.text)


def test_presigned_with_unsigned_amz_header_refused(env, s3, prefix):
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "vb", "Key": prefix + "p"}, ExpiresIn=300)
    r = requests.put(url, data=b"x", headers={"x-amz-meta-sneaky": "1"}, timeout=10)
    assert r.status_code == 403, r.text
    assert h.error_code(r) in ("AccessDenied", "SignatureDoesNotMatch")
    assert_nothing_written(env, "vb", prefix + "p")


def test_metrics_token(make_gateway):
    gw = make_gateway(2, metrics_token="metrics-secret")
    assert requests.get(gw.endpoint + "/metrics", timeout=5).status_code in (401, 403)
    r = requests.get(gw.endpoint + "/metrics", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert r.status_code in (401, 403)
    r = requests.get(gw.endpoint + "/metrics", headers={"Authorization": "Bearer metrics-secret"}, timeout=5)
    assert r.status_code == 200
    assert "s3_balance_bucket_healthy" in r.text
    assert requests.get(gw.endpoint + "/health", timeout=5).status_code == 200
