"""Multi-user and browser access on the server, with boto3, plain HTTP and headless Chromium:
buckets belong to the key that created them, canned ACLs open a bucket to anonymous readers,
and CORS rules (PutBucketCors or the config) let a page on another origin upload with a
presigned PUT and read back with fetch."""

from __future__ import annotations

import http.server
import threading

import botocore.exceptions
import pytest
import requests

import harness as h

ALICE, BOB = ("alice-key", "alice-secret"), ("bob-key", "bob-secret")
CREDENTIALS = [
    {"access_key": h.ADMIN_KEY, "secret_key": h.ADMIN_SECRET, "admin": True},
    {"access_key": ALICE[0], "secret_key": ALICE[1]},
    {"access_key": BOB[0], "secret_key": BOB[1]},
]


def error(call) -> tuple[int, str]:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]


@pytest.fixture
def gw(make_gateway):
    return make_gateway(2, credentials=CREDENTIALS, allow_create_bucket=True)


def test_a_bucket_belongs_to_the_key_that_created_it(gw):
    alice, bob, admin = gw.client(*ALICE), gw.client(*BOB), gw.client()
    alice.create_bucket(Bucket="alice-photos")
    alice.put_object(Bucket="alice-photos", Key="cat.jpg", Body=b"meow")
    # Bob can neither read, list, write, delete nor take the name.
    assert error(lambda: bob.get_object(Bucket="alice-photos", Key="cat.jpg")) == (403, "AccessDenied")
    assert error(lambda: bob.list_objects_v2(Bucket="alice-photos")) == (403, "AccessDenied")
    assert error(lambda: bob.put_object(Bucket="alice-photos", Key="cat.jpg", Body=b"woof")) == (403, "AccessDenied")
    assert error(lambda: bob.delete_object(Bucket="alice-photos", Key="cat.jpg")) == (403, "AccessDenied")
    assert error(lambda: bob.delete_bucket(Bucket="alice-photos")) == (403, "AccessDenied")
    assert error(lambda: bob.create_bucket(Bucket="alice-photos")) == (409, "BucketAlreadyExists")
    assert error(lambda: bob.copy_object(Bucket="data", Key="stolen", CopySource="alice-photos/cat.jpg")) == (403, "AccessDenied")
    assert alice.get_object(Bucket="alice-photos", Key="cat.jpg")["Body"].read() == b"meow", "unchanged"
    # Alice creating it again: 200 in us-east-1 (AWS's legacy answer), 409 elsewhere.
    alice.create_bucket(Bucket="alice-photos")
    eu = {"LocationConstraint": "eu-west-1"}
    assert error(lambda: alice.create_bucket(Bucket="alice-photos", CreateBucketConfiguration=eu)) == (409, "BucketAlreadyOwnedByYou")
    # ListBuckets shows each caller what it may use; the admin sees everything.
    bob.create_bucket(Bucket="bob-notes")

    def names(client):
        return [b["Name"] for b in client.list_buckets()["Buckets"]]

    assert names(alice) == ["alice-photos", "data"]
    assert names(bob) == ["bob-notes", "data"]
    assert names(admin) == ["alice-photos", "bob-notes", "data"]
    assert admin.get_object(Bucket="alice-photos", Key="cat.jpg")["Body"].read() == b"meow"
    owner = alice.get_bucket_acl(Bucket="alice-photos")["Owner"]
    assert owner["ID"] == ALICE[0]
    # Ownership is in the metadata store: it outlives a restart.
    gw.stop()
    gw.start()
    assert error(lambda: bob.get_object(Bucket="alice-photos", Key="cat.jpg")) == (403, "AccessDenied")
    assert names(bob) == ["bob-notes", "data"]


def test_canned_acls_open_a_bucket_to_anonymous_readers_only(gw):
    alice, bob = gw.client(*ALICE), gw.client(*BOB)
    alice.create_bucket(Bucket="public-pics", ACL="public-read")
    alice.put_object(Bucket="public-pics", Key="a.txt", Body=b"for everyone", ContentType="text/plain")
    url = f"{gw.endpoint}/public-pics/a.txt"
    r = requests.get(url, timeout=10)
    assert (r.status_code, r.content) == (200, b"for everyone")
    assert requests.get(f"{gw.endpoint}/public-pics?list-type=2", timeout=10).status_code == 200
    assert bob.get_object(Bucket="public-pics", Key="a.txt")["Body"].read() == b"for everyone"
    # Reading is all: anonymous and other keys may not write, nor see or change the ACL.
    assert requests.put(url, data=b"defaced", timeout=10).status_code == 403
    assert error(lambda: bob.put_object(Bucket="public-pics", Key="a.txt", Body=b"defaced")) == (403, "AccessDenied")
    assert error(lambda: bob.put_bucket_acl(Bucket="public-pics", ACL="private")) == (403, "AccessDenied")
    assert requests.get(url, timeout=10).content == b"for everyone"
    grants = alice.get_bucket_acl(Bucket="public-pics")["Grants"]
    assert {(g["Grantee"].get("URI") or g["Grantee"].get("ID"), g["Permission"]) for g in grants} == {
        (ALICE[0], "FULL_CONTROL"), ("http://acs.amazonaws.com/groups/global/AllUsers", "READ")}
    # Private again: anonymous reads stop, the owner still reads.
    alice.put_bucket_acl(Bucket="public-pics", ACL="private")
    assert requests.get(url, timeout=10).status_code == 403
    assert len(alice.get_bucket_acl(Bucket="public-pics")["Grants"]) == 1
    # A bucket created private can be made public; grants the gateway does not enforce are 501.
    alice.create_bucket(Bucket="later-public")
    alice.put_object(Bucket="later-public", Key="b.txt", Body=b"b")
    assert requests.get(f"{gw.endpoint}/later-public/b.txt", timeout=10).status_code == 403
    alice.put_bucket_acl(Bucket="later-public", ACL="public-read")
    assert requests.get(f"{gw.endpoint}/later-public/b.txt", timeout=10).content == b"b"
    assert error(lambda: alice.put_bucket_acl(Bucket="later-public", ACL="public-read-write")) == (501, "NotImplemented")
    assert error(lambda: alice.put_object(Bucket="later-public", Key="c", Body=b"c", ACL="authenticated-read")) == (501, "NotImplemented")
    assert error(lambda: alice.head_object(Bucket="later-public", Key="c")) == (404, "404")
    # Object ACLs the gateway keeps are accepted and carried to the backend holding the object.
    alice.put_object(Bucket="later-public", Key="d", Body=b"d", ACL="public-read")
    alice.put_object(Bucket="later-public", Key="e", Body=b"e", ACL="private")

    def grants_on_backend(key):
        (holder,) = [b for b in gw.backends if b.has(f"later-public/{key}")]
        acl = holder.moto.s3.get_object_acl(Bucket=holder.bucket, Key=f"later-public/{key}")
        return {g["Grantee"].get("URI") for g in acl["Grants"]} - {None}

    assert grants_on_backend("d") == {"http://acs.amazonaws.com/groups/global/AllUsers"}
    assert grants_on_backend("e") == set()
    alice.put_object_acl(Bucket="later-public", Key="e", ACL="public-read")
    assert grants_on_backend("e") == {"http://acs.amazonaws.com/groups/global/AllUsers"}
    assert alice.get_object(Bucket="later-public", Key="e")["Body"].read() == b"e", "the object is untouched"
    assert error(lambda: alice.put_object_acl(Bucket="later-public", Key="missing", ACL="private"))[0] == 404
    assert error(lambda: bob.put_object_acl(Bucket="later-public", Key="e", ACL="private")) == (403, "AccessDenied")


CORS_RULE = {
    "AllowedOrigins": ["https://app.example.com"],
    "AllowedMethods": ["GET", "PUT"],
    "AllowedHeaders": ["*"],
    "ExposeHeaders": ["ETag"],
    "MaxAgeSeconds": 600,
}


def preflight(gw, path, origin, method="PUT", headers="content-type"):
    return requests.options(f"{gw.endpoint}{path}", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers})


def test_cors_rules_are_kept_per_bucket_and_answer_preflights(gw):
    alice, bob = gw.client(*ALICE), gw.client(*BOB)
    alice.create_bucket(Bucket="web-assets")
    assert preflight(gw, "/web-assets/x", "https://app.example.com").status_code == 403
    assert error(lambda: alice.get_bucket_cors(Bucket="web-assets")) == (404, "NoSuchCORSConfiguration")
    alice.put_bucket_cors(Bucket="web-assets", CORSConfiguration={"CORSRules": [CORS_RULE]})
    rules = alice.get_bucket_cors(Bucket="web-assets")["CORSRules"]
    assert rules == [CORS_RULE]
    r = preflight(gw, "/web-assets/x", "https://app.example.com")
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, PUT"
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in r.headers["Vary"]
    assert preflight(gw, "/web-assets/x", "https://evil.example.com").status_code == 403
    assert preflight(gw, "/web-assets/x", "https://app.example.com", method="DELETE").status_code == 403
    bad = requests.options(f"{gw.endpoint}/web-assets/x", timeout=10)
    assert (bad.status_code, h.error_code(bad)) == (400, "BadRequest")
    # Every answer to an allowed origin carries the headers, errors included.
    alice.put_object(Bucket="web-assets", Key="x", Body=b"x")
    url = alice.generate_presigned_url("get_object", Params={"Bucket": "web-assets", "Key": "x"}, ExpiresIn=300)
    ok = requests.get(url, headers={"Origin": "https://app.example.com"}, timeout=10)
    assert (ok.status_code, ok.headers.get("Access-Control-Allow-Origin")) == (200, "https://app.example.com")
    assert ok.headers.get("Access-Control-Expose-Headers") == "ETag"
    missing = requests.get(f"{gw.endpoint}/web-assets/nothing", headers={"Origin": "https://app.example.com"}, timeout=10)
    assert missing.status_code == 403 and missing.headers.get("Access-Control-Allow-Origin") == "https://app.example.com"
    other = requests.get(url, headers={"Origin": "https://evil.example.com"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in other.headers
    # Only the owner changes them; malformed rules change nothing.
    assert error(lambda: bob.delete_bucket_cors(Bucket="web-assets")) == (403, "AccessDenied")
    bad_rule = dict(CORS_RULE, AllowedMethods=["PATCH"])
    assert error(lambda: alice.put_bucket_cors(Bucket="web-assets", CORSConfiguration={"CORSRules": [bad_rule]})) == (400, "InvalidRequest")
    assert alice.get_bucket_cors(Bucket="web-assets")["CORSRules"] == [CORS_RULE]
    alice.delete_bucket_cors(Bucket="web-assets")
    assert error(lambda: alice.get_bucket_cors(Bucket="web-assets")) == (404, "NoSuchCORSConfiguration")
    assert preflight(gw, "/web-assets/x", "https://app.example.com").status_code == 403


def test_configured_cors_rules_mark_redirects_too(logs, moto1):
    """A configured bucket's rules, on the redirect data path: the 307 itself carries them."""
    backend = h.Backend("r1", moto1, "access-redirect-real")
    moto1.create_bucket(backend.bucket)
    rule = {"allowed_origins": ["https://*.example.com"], "allowed_methods": ["GET"], "max_age_seconds": 60}
    vb = h.VBucket("site", [backend], reads="redirect", cors=[rule])
    gw = h.Gateway(logs / "gateway-access-redirect", [backend], [vb], {})
    gw.start()
    try:
        s3 = gw.client()
        s3.put_object(Bucket="site", Key="index.html", Body=b"<h1>hi</h1>")
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "site", "Key": "index.html"}, ExpiresIn=300)
        r = requests.get(url, headers={"Origin": "https://www.example.com"}, allow_redirects=False, timeout=10)
        assert r.status_code == 307
        assert r.headers["Access-Control-Allow-Origin"] == "https://www.example.com"
        assert preflight(gw, "/site/index.html", "https://www.example.com", method="GET", headers="").status_code == 200
        assert s3.get_bucket_cors(Bucket="site")["CORSRules"][0]["AllowedOrigins"] == ["https://*.example.com"]
        assert error(lambda: s3.delete_bucket_cors(Bucket="site")) == (403, "AccessDenied")
    finally:
        gw.stop()


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<!doctype html><title>uploader</title><p>a page on another origin</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve_page():
    server = http.server.ThreadingHTTPServer((h.HOST, h.free_port()), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


BROWSER_SCRIPT = """
const [putUrl, getUrl, done] = arguments;
(async () => {
  try {
    const put = await fetch(putUrl, {method: 'PUT', body: 'uploaded by a browser',
                                     headers: {'Content-Type': 'text/plain'}});
    const etag = put.headers.get('ETag');
    const get = await fetch(getUrl);
    done({put: put.status, etag: etag, get: get.status, text: await get.text()});
  } catch (e) {
    done({error: String(e)});
  }
})();
"""


def test_a_page_on_another_origin_uploads_and_downloads_in_chromium(gw):
    """Chromium enforces CORS: the allowed origin's presigned PUT (after its preflight) and
    fetch work and the page may read the ETag; a page on an origin the rules do not name
    gets nothing, and its upload never reaches the bucket."""
    allowed, other = serve_page(), serve_page()
    alice = gw.client(*ALICE)
    alice.create_bucket(Bucket="browser-uploads")
    origin = f"http://{h.HOST}:{allowed.server_address[1]}"
    alice.put_bucket_cors(Bucket="browser-uploads", CORSConfiguration={"CORSRules": [
        dict(CORS_RULE, AllowedOrigins=[origin])]})

    def urls(key):
        params = {"Bucket": "browser-uploads", "Key": key}
        return (alice.generate_presigned_url("put_object", Params=params, ExpiresIn=300),
                alice.generate_presigned_url("get_object", Params=params, ExpiresIn=300))

    browser = h.chromium_driver()
    try:
        browser.set_script_timeout(30)
        browser.get(origin + "/")
        result = browser.execute_async_script(BROWSER_SCRIPT, *urls("from-browser.txt"))
        assert result.get("error") is None, result
        assert (result["put"], result["get"], result["text"]) == (200, 200, "uploaded by a browser")
        stored = alice.head_object(Bucket="browser-uploads", Key="from-browser.txt")
        assert result["etag"] == stored["ETag"], "the exposed ETag is readable by the page"

        browser.get(f"http://{h.HOST}:{other.server_address[1]}/")
        refused = browser.execute_async_script(BROWSER_SCRIPT, *urls("from-elsewhere.txt"))
        assert "Failed to fetch" in refused.get("error", ""), refused
        assert error(lambda: alice.head_object(Bucket="browser-uploads", Key="from-elsewhere.txt")) == (404, "404")
    finally:
        browser.quit()
        allowed.shutdown()
        other.shutdown()
