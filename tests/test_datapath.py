"""Data path modes: redirect (307 to a presigned backend URL) and auto."""

import subprocess
import urllib.parse

import pytest
import requests

import harness as h


def _backend_ports(env):
    return {env.moto1.port, env.moto2.port}


def test_redirect_mode_answers_307_to_the_backend(env, s3, prefix):
    key = prefix + "redirected é.txt"
    body = h.payload(200_000, key)
    s3.put_object(Bucket="redir", Key=key, Body=body)  # writes are proxied

    url = f"{env.endpoint}/redir/{urllib.parse.quote(key)}"
    r = h.signed_request("GET", url)
    assert r.status_code == 307, (r.status_code, r.text[:500])
    location = r.headers["Location"]
    target = urllib.parse.urlparse(location)
    assert target.port in _backend_ports(env), location
    assert "X-Amz-Signature=" in location  # presigned for the backend
    assert h.ADMIN_SECRET not in location and h.ADMIN_KEY not in location
    # Following it (no gateway credentials needed) gives the bytes.
    followed = requests.get(location, timeout=30)
    assert followed.status_code == 200
    assert followed.content == body

    # curl -L with a presigned gateway URL follows the redirect.
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "redir", "Key": key}, ExpiresIn=300)
    r = requests.get(presigned, timeout=30)  # requests follows too
    assert r.content == body
    assert r.history and r.history[0].status_code == 307
    raw = subprocess.run(["curl", "-sSfL", presigned], capture_output=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == body


def test_redirect_mode_range_and_head(env, s3, prefix):
    key = prefix + "r"
    body = h.payload(10_000, key)
    s3.put_object(Bucket="redir", Key=key, Body=body)
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "redir", "Key": key}, ExpiresIn=300)
    r = requests.get(presigned, headers={"Range": "bytes=100-199"}, timeout=30)
    assert r.status_code == 206 and r.content == body[100:200]
    # A missing key is answered by the gateway (404), not redirected.
    r = h.signed_request("GET", f"{env.endpoint}/redir/{prefix}missing")
    assert r.status_code == 404 and h.error_code(r) == "NoSuchKey"


def test_redirect_status_302_is_selectable(make_gateway):
    gw = make_gateway(2, reads="redirect", redirect_status=302)
    s3 = gw.client()
    s3.put_object(Bucket="data", Key="k", Body=b"found")
    r = h.signed_request("GET", f"{gw.endpoint}/data/k")
    assert r.status_code == 302
    assert requests.get(r.headers["Location"], timeout=30).content == b"found"


def test_auto_mode_proxies_sdk_and_redirects_presigned(env, s3, prefix):
    key = prefix + "auto.bin"
    body = h.payload(300_000, key)
    s3.put_object(Bucket="autob", Key=key, Body=body)

    # SDK request (Authorization header): proxied, the SDK gets the bytes.
    assert s3.get_object(Bucket="autob", Key=key)["Body"].read() == body
    r = h.signed_request("GET", f"{env.endpoint}/autob/{urllib.parse.quote(key)}")
    assert r.status_code == 200 and r.content == body

    # Presigned URL made by boto3 with the gateway's keys: redirected.
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "autob", "Key": key}, ExpiresIn=300)
    r = requests.get(presigned, allow_redirects=False, timeout=30)
    assert r.status_code == 307, r.text[:300]
    assert urllib.parse.urlparse(r.headers["Location"]).port in _backend_ports(env)
    raw = subprocess.run(["curl", "-sSfL", presigned], capture_output=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == body


def test_presigned_put_through_gateway(env, s3, prefix):
    key = prefix + "presigned-put"
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "vb", "Key": key}, ExpiresIn=300)
    r = requests.put(url, data=b"uploaded with a presigned URL", timeout=30)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket="vb", Key=key)["Body"].read() == b"uploaded with a presigned URL"


@pytest.mark.parametrize("bucket", ["vb", "autob"])
def test_anonymous_read_refused_without_anonymous_read(env, s3, prefix, bucket):
    s3.put_object(Bucket=bucket, Key=prefix + "private", Body=b"secret")
    r = requests.get(f"{env.endpoint}/{bucket}/{prefix}private", allow_redirects=False, timeout=10)
    assert r.status_code == 403
    assert h.error_code(r) == "AccessDenied"
