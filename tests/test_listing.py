"""Listings merged over backends answer exactly what one bucket would: the same keys are put
into a plain moto bucket (the reference) and both are listed with the same parameters."""

import concurrent.futures

import pytest

import harness as h

N_KEYS = 2500


def _keys():
    keys = []
    for i in range(N_KEYS):
        if i % 50 == 0:
            keys.append(f"top-{i:04d}.txt")
        elif i % 7 == 0:
            keys.append(f"photos/{i % 5}/img-{i:04d}.jpg")
        elif i % 11 == 0:
            keys.append(f"docs/é-{i % 3}/ü {i:04d}.md")
        elif i % 13 == 0:
            keys.append(f"a+b/c d/{i:04d}")
        else:
            keys.append(f"data/{i % 9}/{i % 4}/obj-{i:04d}")
    return keys


@pytest.fixture(scope="module")
def listing_setup(env):
    """2,500 keys in the virtual bucket `lists` (spread over three backends) and the same keys
    in the reference bucket."""
    keys = _keys()
    gw_s3 = env.gw.client(max_pool_connections=16)
    ref = env.moto1.s3

    def put(k):
        body = k.encode()[:7]
        gw_s3.put_object(Bucket="lists", Key=k, Body=body)
        ref.put_object(Bucket=env.reference_bucket, Key=k, Body=body)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))
    return env, keys


def _pages(client, bucket, op, **params):
    pages = []
    token_name, token_param = {
        "list_objects_v2": ("NextContinuationToken", "ContinuationToken"),
        "list_objects": ("NextMarker", "Marker"),
    }[op]
    for _ in range(10_000):
        r = getattr(client, op)(Bucket=bucket, **params)
        pages.append(
            {
                "keys": [(o["Key"], o["Size"], o["ETag"]) for o in r.get("Contents", [])],
                "prefixes": [p["Prefix"] for p in r.get("CommonPrefixes", [])],
                "truncated": r["IsTruncated"],
                "count": r.get("KeyCount"),
            }
        )
        if not r["IsTruncated"]:
            return pages
        if op == "list_objects" and not r.get("NextMarker"):
            # v1 without delimiter: the next marker is the last key.
            params["Marker"] = r["Contents"][-1]["Key"]
        else:
            params[token_param] = r[token_name]
    raise AssertionError("listing never ended")


PARAMS = [
    {},
    {"MaxKeys": 333},
    {"MaxKeys": 7, "Prefix": "photos/"},
    {"Delimiter": "/"},
    {"Delimiter": "/", "MaxKeys": 2},
    {"Prefix": "data/", "Delimiter": "/"},
    {"Prefix": "data/3/", "Delimiter": "/", "MaxKeys": 3},
    {"Prefix": "docs/é-1/"},
    {"Prefix": "a+b/c d/", "MaxKeys": 10},
    {"Prefix": "data/1", "Delimiter": "/"},
    {"Delimiter": "-"},
    {"Prefix": "nothing-here/"},
]


@pytest.mark.parametrize("params", PARAMS, ids=[str(p) for p in PARAMS])
def test_list_objects_v2_equals_one_bucket(listing_setup, params):
    env, _ = listing_setup
    got = _pages(env.gw.client(), "lists", "list_objects_v2", **dict(params))
    want = _pages(env.moto1.s3, env.reference_bucket, "list_objects_v2", **dict(params))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"page {i} differs"


@pytest.mark.parametrize("params", PARAMS[:7], ids=[str(p) for p in PARAMS[:7]])
def test_list_objects_v1_equals_one_bucket(listing_setup, params):
    """v1 pages hold the same entries as v2 pages with the same parameters. The reference is
    moto's v2 listing: moto's v1 with a delimiter ignores MaxKeys for common prefixes and
    decodes `+` in prefixes as a space, which S3 does not."""
    env, _ = listing_setup
    got = _pages(env.gw.client(), "lists", "list_objects", **dict(params))
    want = _pages(env.moto1.s3, env.reference_bucket, "list_objects_v2", **dict(params))
    for page in got + want:
        page.pop("count")
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"page {i} differs"


def test_list_v2_start_after(listing_setup):
    env, keys = listing_setup
    start = sorted(keys)[1234]
    got = _pages(env.gw.client(), "lists", "list_objects_v2", StartAfter=start, MaxKeys=500)
    want = _pages(env.moto1.s3, env.reference_bucket, "list_objects_v2", StartAfter=start, MaxKeys=500)
    assert got == want
    assert sum(len(p["keys"]) for p in got) == N_KEYS - 1235


def test_listing_covers_every_backend(listing_setup):
    env, keys = listing_setup
    where = env.vb("lists").placements("")
    assert sorted(where) == sorted(keys)
    assert set(where.values()) == {"b1", "b2", "b3"}


def test_list_without_url_encoding(listing_setup):
    """A raw request without encoding-type=url gets the keys XML-escaped, not percent-encoded."""
    env, _ = listing_setup
    r = h.signed_request("GET", f"{env.endpoint}/lists?list-type=2&prefix=docs%2F%C3%A9-1%2F&max-keys=3")
    assert r.status_code == 200, r.text
    assert "<Key>docs/é-1/ü " in r.content.decode()


def test_list_object_versions_unversioned(env, s3, prefix):
    keys = [f"{prefix}v-{i}" for i in range(5)]
    for k in keys:
        s3.put_object(Bucket="vb", Key=k, Body=b"v")
    r = s3.list_object_versions(Bucket="vb", Prefix=prefix)
    versions = r.get("Versions", [])
    assert [v["Key"] for v in versions] == keys
    for v in versions:
        assert v["VersionId"] == "null"
        assert v["IsLatest"] is True
        assert v["Size"] == 1
    assert not r.get("DeleteMarkers")
    # Paging with key markers.
    r1 = s3.list_object_versions(Bucket="vb", Prefix=prefix, MaxKeys=2)
    assert r1["IsTruncated"] is True
    assert [v["Key"] for v in r1["Versions"]] == keys[:2]
    r2 = s3.list_object_versions(
        Bucket="vb",
        Prefix=prefix,
        MaxKeys=10,
        KeyMarker=r1["NextKeyMarker"],
        VersionIdMarker=r1.get("NextVersionIdMarker", "null"),
    )
    assert [v["Key"] for v in r2["Versions"]] == keys[2:]


def test_get_bucket_location_and_versioning(env, s3):
    s3.get_bucket_location(Bucket="vb")
    r = s3.get_bucket_versioning(Bucket="vb")
    assert r.get("Status") in (None, "Suspended")
