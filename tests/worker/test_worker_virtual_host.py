"""Virtual-host addressing through the Worker, as users of a custom domain reach it
(`photos.s3.example.com`): the bucket is named by the Host, not the path.

The test config sets `s3api.virtual_host: true` with base domain `s3.test`, and wrangler.toml
carries the routes of such a domain (`*.s3.test/*`, `s3.test/*`); `wrangler dev` runs with
`--infer-origin-from-routes=false` so that the Worker sees the Host the client sent, as a
Worker on a Cloudflare route does (without it, local mode rewrites request.url and Host to the
first route's host). Names under `s3.test` do not resolve: boto3 sends each signed request to
127.0.0.1 with the virtual host in the Host header (tests/harness.py `virtual_host_client`),
curl gets `--resolve <bucket>.s3.test:<port>:127.0.0.1`, requests a Host header.
"""

import subprocess
import sys
import urllib.parse
from pathlib import Path

import botocore
import pytest
import requests

from conftest import ACCESS_KEY, SECRET_KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402


def port_of(gateway):
    return urllib.parse.urlparse(gateway.url).port


@pytest.fixture()
def vs3(gateway):
    """boto3 in virtual-host style; `vs3.sent` lists (Host, path) of every request it sent."""
    client = h.virtual_host_client(port_of(gateway), ACCESS_KEY, SECRET_KEY, read_timeout=30)
    client.sent = []

    def record(request, **_):
        client.sent.append((request.headers["Host"], urllib.parse.urlparse(request.url).path))

    client.meta.events.register("before-send.s3", record)
    return client


def assert_virtual_host(vs3, gateway, bucket):
    """Every request named the bucket by its Host, none by the path (so the test cannot pass
    on a path-style fallback)."""
    expected = f"{bucket}.{h.BASE_DOMAIN}:{port_of(gateway)}"
    assert vs3.sent, "no request was sent"
    for host, path in vs3.sent:
        if isinstance(host, bytes):
            host = host.decode()
        assert host == expected, (host, path)
        assert not path.startswith(f"/{bucket}/") and path != f"/{bucket}", path


def holders(motos, bucket, key):
    return [m.name for m in motos.values() if f"{bucket}/{key}" in m.keys()]


def test_objects_round_trip_in_virtual_host_style(gateway, s3, motos, vs3):
    """PUT, GET, HEAD, ListObjectsV2 (prefix, delimiter), CopyObject and DELETE addressed as
    `photos.s3.test`: the bytes come back, each object sits on one backend under `photos/`,
    the path-style client sees the same objects, and deletes reach the backends."""
    keys = {"vh/dir/é file+1.txt": b"first", "vh/dir/a&b.bin": h.payload(70_000, "vh"), "vh/top.txt": b""}
    for key, data in keys.items():
        vs3.put_object(Bucket="photos", Key=key, Body=data, ContentType="text/plain")
    for key, data in keys.items():
        assert vs3.get_object(Bucket="photos", Key=key)["Body"].read() == data
        head = vs3.head_object(Bucket="photos", Key=key)
        assert head["ContentLength"] == len(data) and head["ContentType"] == "text/plain"
        assert len(holders(motos, "photos", key)) == 1, key
        # The same object, path style.
        assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == data

    listed = vs3.list_objects_v2(Bucket="photos", Prefix="vh/", Delimiter="/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["vh/top.txt"]
    assert [p["Prefix"] for p in listed.get("CommonPrefixes", [])] == ["vh/dir/"]
    listed = vs3.list_objects_v2(Bucket="photos", Prefix="vh/dir/")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(k for k in keys if k.startswith("vh/dir/"))

    vs3.copy_object(Bucket="photos", Key="vh/copy.bin", CopySource={"Bucket": "photos", "Key": "vh/dir/a&b.bin"})
    assert vs3.get_object(Bucket="photos", Key="vh/copy.bin")["Body"].read() == keys["vh/dir/a&b.bin"]
    assert len(holders(motos, "photos", "vh/copy.bin")) == 1

    with pytest.raises(botocore.exceptions.ClientError) as e:
        vs3.get_object(Bucket="photos", Key="vh/never-written")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"

    for key in [*keys, "vh/copy.bin"]:
        vs3.delete_object(Bucket="photos", Key=key)
    assert vs3.list_objects_v2(Bucket="photos", Prefix="vh/").get("KeyCount") == 0
    assert [k for m in motos.values() for k in m.keys() if k.startswith("photos/vh/")] == []
    assert_virtual_host(vs3, gateway, "photos")


def test_the_host_names_the_bucket(gateway, s3):
    """An unknown `<name>.s3.test` is that bucket, missing (404 NoSuchBucket), not a path; the
    bare base domain serves path-style requests (ListBuckets shows the buckets)."""
    port = port_of(gateway)
    nosuch = h.virtual_host_client(port, ACCESS_KEY, SECRET_KEY)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        nosuch.list_objects_v2(Bucket="nosuchbucket")
    assert e.value.response["Error"]["Code"] == "NoSuchBucket"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    names = [b["Name"] for b in nosuch.list_buckets()["Buckets"]]
    assert {"photos", "public"} <= set(names), names


def test_multipart_upload_in_virtual_host_style(gateway, motos, vs3):
    """A two-part upload (5 MiB and 1000 bytes) addressed as `photos.s3.test` completes on one
    backend and reads back whole."""
    key = "vh/mp.bin"
    parts = [h.payload(5 * 1024 * 1024, "vh-1"), h.payload(1000, "vh-2")]
    uid = vs3.create_multipart_upload(Bucket="photos", Key=key)["UploadId"]
    etags = [
        vs3.upload_part(Bucket="photos", Key=key, UploadId=uid, PartNumber=i, Body=data)["ETag"]
        for i, data in enumerate(parts, start=1)
    ]
    listed = vs3.list_parts(Bucket="photos", Key=key, UploadId=uid)
    assert [p["Size"] for p in listed["Parts"]] == [len(p) for p in parts]
    vs3.complete_multipart_upload(
        Bucket="photos",
        Key=key,
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, start=1)]},
    )
    assert vs3.get_object(Bucket="photos", Key=key)["Body"].read() == b"".join(parts)
    assert len(holders(motos, "photos", key)) == 1
    vs3.delete_object(Bucket="photos", Key=key)
    assert_virtual_host(vs3, gateway, "photos")


def test_presigned_put_and_get_urls_in_virtual_host_style(gateway, s3, vs3, tmp_path):
    """Presigned URLs made in virtual-host style (`http://photos.s3.test:<port>/<key>?X-Amz-...`)
    work from plain HTTP clients: a PUT with requests (Host header), a GET with curl (the name
    resolved to 127.0.0.1, curl sending the URL's Host) and with requests. The same URL sent
    with another Host is refused: the host is part of what was signed."""
    key = "vh/presigned é+.bin"
    data = h.payload(40_000, "vh-presigned")
    port = port_of(gateway)
    put = vs3.generate_presigned_url("put_object", Params={"Bucket": "photos", "Key": key}, ExpiresIn=300)
    parsed = urllib.parse.urlparse(put)
    assert parsed.netloc == f"photos.{h.BASE_DOMAIN}:{port}", put
    assert not parsed.path.startswith("/photos/") and "X-Amz-Signature=" in put, put
    url, host = h.to_loopback(put)
    r = requests.put(url, headers=host, data=data, timeout=30)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == data

    get = vs3.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": key}, ExpiresIn=300)
    out = subprocess.run(["curl", "-sS", "-L", "--fail", *h.resolve_to_loopback(get), get], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == data
    url, host = h.to_loopback(get)
    assert requests.get(url, headers=host, timeout=30).content == data

    # Another bucket's host, or the gateway's own: the signature no longer matches.
    for other in (f"public.{h.BASE_DOMAIN}:{port}", f"{h.HOST}:{port}"):
        r = requests.get(url, headers={"Host": other}, timeout=30)
        assert r.status_code == 403, (other, r.status_code, r.text)
    s3.delete_object(Bucket="photos", Key=key)


def test_redirect_in_virtual_host_style(gateway, s3, motos, tmp_path):
    """`public` has `reads: auto`: an anonymous GET of `public.s3.test/<key>` and a presigned
    GET URL made in virtual-host style are answered 307 with a presigned URL of the backend
    that holds the object; following it (requests, curl -L) yields the object's bytes.
    Signed SDK reads of the same object are proxied."""
    port = port_of(gateway)
    vpub = h.virtual_host_client(port, ACCESS_KEY, SECRET_KEY, read_timeout=30)
    key = "vh/img/cat é.txt"
    data = b"meow through a virtual host"
    vpub.put_object(Bucket="public", Key=key, Body=data)
    [holder] = holders(motos, "public", key)
    backend = motos[holder]
    quoted = urllib.parse.quote(key)

    anonymous = f"http://public.{h.BASE_DOMAIN}:{port}/{quoted}"
    presigned = vpub.generate_presigned_url("get_object", Params={"Bucket": "public", "Key": key}, ExpiresIn=300)
    assert urllib.parse.urlparse(presigned).netloc == f"public.{h.BASE_DOMAIN}:{port}", presigned
    for url in (anonymous, presigned):
        loop, host = h.to_loopback(url)
        r = requests.get(loop, headers=host, allow_redirects=False, timeout=30)
        assert r.status_code == 307, (url, r.status_code, r.text[:500])
        location = r.headers["location"]
        assert location.startswith(f"{backend.endpoint}/{backend.bucket}/public/"), location
        assert "X-Amz-Signature=" in location, location
        followed = requests.get(location, timeout=30)
        assert followed.status_code == 200 and followed.content == data
        out = subprocess.run(
            ["curl", "-sS", "-L", "--fail", *h.resolve_to_loopback(url), url], capture_output=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == data

    # Signed SDK traffic on the same bucket is proxied (SDKs do not follow redirects).
    assert vpub.get_object(Bucket="public", Key=key)["Body"].read() == data
    # A missing key is the gateway's 404, not a redirect.
    loop, host = h.to_loopback(f"http://public.{h.BASE_DOMAIN}:{port}/vh/img/missing")
    r = requests.get(loop, headers=host, allow_redirects=False, timeout=30)
    assert r.status_code == 404, (r.status_code, r.text[:300])
    s3.delete_object(Bucket="public", Key=key)
