"""Bucket ownership, canned ACLs and CORS on the Worker (under `wrangler dev`, records in
local KV): the same rules as the server's tests/test_access.py, through boto3 and plain HTTP."""

import uuid

import botocore.exceptions
import pytest
import requests

from conftest import ALICE, BOB


def error(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_buckets_belong_to_their_creator_on_the_worker(gateway):
    alice, bob, owner = gateway.client(*ALICE), gateway.client(*BOB), gateway.client()
    bucket = name("alice")
    alice.create_bucket(Bucket=bucket)
    alice.put_object(Bucket=bucket, Key="k", Body=b"alice's")
    assert error(lambda: bob.get_object(Bucket=bucket, Key="k")) == (403, "AccessDenied")
    assert error(lambda: bob.put_object(Bucket=bucket, Key="k", Body=b"bob's")) == (403, "AccessDenied")
    assert error(lambda: bob.create_bucket(Bucket=bucket)) == (409, "BucketAlreadyExists")
    assert alice.get_object(Bucket=bucket, Key="k")["Body"].read() == b"alice's"
    alice.create_bucket(Bucket=bucket)  # us-east-1: 200 for its owner
    assert bucket in [b["Name"] for b in alice.list_buckets()["Buckets"]]
    assert bucket not in [b["Name"] for b in bob.list_buckets()["Buckets"]]
    # The owner's key pair of the config (admin) sees and reads everything.
    assert bucket in [b["Name"] for b in owner.list_buckets()["Buckets"]]
    assert owner.get_object(Bucket=bucket, Key="k")["Body"].read() == b"alice's"


def test_public_read_acl_on_the_worker(gateway):
    alice = gateway.client(*ALICE)
    bucket = name("pub")
    alice.create_bucket(Bucket=bucket, ACL="public-read")
    alice.put_object(Bucket=bucket, Key="a.txt", Body=b"hello world")
    url = f"{gateway.url}/{bucket}/a.txt"
    # A public bucket's anonymous reads may be redirected to the backend (reads: auto):
    # following the redirect gives the bytes either way.
    assert requests.get(url, timeout=30).content == b"hello world"
    assert requests.put(url, data=b"defaced", timeout=30).status_code == 403
    alice.put_bucket_acl(Bucket=bucket, ACL="private")
    assert requests.get(url, timeout=30).status_code == 403
    assert error(lambda: alice.put_bucket_acl(Bucket=bucket, ACL="public-read-write")) == (501, "NotImplemented")


def test_cors_on_the_worker(gateway):
    alice = gateway.client(*ALICE)
    bucket = name("web")
    alice.create_bucket(Bucket=bucket)
    alice.put_object(Bucket=bucket, Key="x", Body=b"x")
    rule = {"AllowedOrigins": ["https://app.example.com"], "AllowedMethods": ["GET", "PUT"],
            "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600}
    alice.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
    assert alice.get_bucket_cors(Bucket=bucket)["CORSRules"] == [rule]

    def preflight(origin):
        return requests.options(f"{gateway.url}/{bucket}/x", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type"})

    ok = preflight("https://app.example.com")
    assert ok.status_code == 200, ok.text
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert ok.headers["Access-Control-Allow-Methods"] == "GET, PUT"
    assert preflight("https://evil.example.com").status_code == 403
    signer = gateway.client(*ALICE, signature_version="s3v4")
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "x"}, ExpiresIn=300)
    got = requests.get(url, headers={"Origin": "https://app.example.com"}, timeout=30)
    assert got.content == b"x"
    assert got.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    alice.delete_bucket_cors(Bucket=bucket)
    assert error(lambda: alice.get_bucket_cors(Bucket=bucket)) == (404, "NoSuchCORSConfiguration")
    assert preflight("https://app.example.com").status_code == 403
