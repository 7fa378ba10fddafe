"""Multipart uploads, copies, and batch deletes."""

import collections
import concurrent.futures
import hashlib

import pytest
from botocore.exceptions import ClientError

import harness as h

MiB = 1024 * 1024


def test_multipart_upload_three_parts(env, s3, prefix):
    key = prefix + "big é.bin"
    parts_data = [h.payload(5 * MiB, "p1"), h.payload(5 * MiB, "p2"), h.payload(5 * MiB, "p3")]
    upload = s3.create_multipart_upload(Bucket="vb", Key=key, ContentType="application/x-test", Metadata={"m": "1"})
    upload_id = upload["UploadId"]

    # The upload is listed while in flight.
    listed = s3.list_multipart_uploads(Bucket="vb", Prefix=prefix)
    assert [(u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])] == [(key, upload_id)]

    etags = []
    for n, data in enumerate(parts_data, start=1):
        r = s3.upload_part(Bucket="vb", Key=key, UploadId=upload_id, PartNumber=n, Body=data)
        assert r["ETag"].strip('"') == hashlib.md5(data).hexdigest()
        etags.append(r["ETag"])

    parts = s3.list_parts(Bucket="vb", Key=key, UploadId=upload_id)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts["Parts"]] == [
        (i + 1, etags[i], 5 * MiB) for i in range(3)
    ]
    # ListParts paging.
    page = s3.list_parts(Bucket="vb", Key=key, UploadId=upload_id, MaxParts=2)
    assert page["IsTruncated"] is True and len(page["Parts"]) == 2
    rest = s3.list_parts(Bucket="vb", Key=key, UploadId=upload_id, PartNumberMarker=page["NextPartNumberMarker"])
    assert [p["PartNumber"] for p in rest["Parts"]] == [3]

    done = s3.complete_multipart_upload(
        Bucket="vb",
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )
    assert done["ETag"].strip('"').endswith("-3")

    got = s3.get_object(Bucket="vb", Key=key)
    body = got["Body"].read()
    assert body == b"".join(parts_data)
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"m": "1"}
    assert got["ETag"] == done["ETag"]
    assert len(env.vb("vb").placement(key)) == 1
    assert s3.list_multipart_uploads(Bucket="vb", Prefix=prefix).get("Uploads", []) == []
    # A ranged read across a part boundary.
    r = s3.get_object(Bucket="vb", Key=key, Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")
    assert r["Body"].read() == body[5 * MiB - 10 : 5 * MiB + 10]


def test_multipart_abort(env, s3, prefix):
    key = prefix + "aborted"
    upload_id = s3.create_multipart_upload(Bucket="vb", Key=key)["UploadId"]
    s3.upload_part(Bucket="vb", Key=key, UploadId=upload_id, PartNumber=1, Body=h.payload(5 * MiB))
    s3.abort_multipart_upload(Bucket="vb", Key=key, UploadId=upload_id)
    assert s3.list_multipart_uploads(Bucket="vb", Prefix=prefix).get("Uploads", []) == []
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket="vb", Key=key, UploadId=upload_id)
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="vb", Key=key)
    # Nothing left on the providers either.
    for b in env.vb("vb").backends:
        uploads = b.s3.list_multipart_uploads(Bucket=b.bucket, Prefix=f"vb/{prefix}").get("Uploads", [])
        assert uploads == [], (b.name, uploads)


def test_multipart_upload_id_is_not_forgeable(env, s3, prefix):
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="vb", Key=prefix + "x", UploadId="forged-upload-id", PartNumber=1, Body=b"x")
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"


def test_boto3_managed_transfer(env, s3, prefix, tmp_path):
    """upload_file / download_file: boto3's own multipart with parallel parts."""
    from boto3.s3.transfer import TransferConfig

    src = tmp_path / "src.bin"
    src.write_bytes(h.payload(12 * MiB + 123, "managed"))
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    s3.upload_file(str(src), "vb", prefix + "managed.bin", Config=cfg)
    dst = tmp_path / "dst.bin"
    s3.download_file("vb", prefix + "managed.bin", str(dst), Config=cfg)
    assert dst.read_bytes() == src.read_bytes()


def test_copy_within_bucket(env, s3, prefix):
    src = prefix + "copy-src"
    s3.put_object(Bucket="vb", Key=src, Body=b"copy me", ContentType="text/x-src", Metadata={"a": "1"})
    seen = collections.Counter()
    src_backend = env.vb("vb").placement(src)[0]
    for i in range(4):
        dst = f"{prefix}copy-dst-{i}"
        r = s3.copy_object(Bucket="vb", Key=dst, CopySource={"Bucket": "vb", "Key": src})
        assert r["CopyObjectResult"]["ETag"]
        got = s3.get_object(Bucket="vb", Key=dst)
        assert got["Body"].read() == b"copy me"
        assert got["ContentType"] == "text/x-src"
        assert got["Metadata"] == {"a": "1"}
        where = env.vb("vb").placement(dst)
        assert len(where) == 1
        seen["same" if where[0] == src_backend else "other"] += 1
    # Replace metadata.
    s3.copy_object(
        Bucket="vb",
        Key=prefix + "copy-replaced",
        CopySource={"Bucket": "vb", "Key": src},
        MetadataDirective="REPLACE",
        ContentType="text/x-new",
        Metadata={"b": "2"},
    )
    got = s3.head_object(Bucket="vb", Key=prefix + "copy-replaced")
    assert got["ContentType"] == "text/x-new" and got["Metadata"] == {"b": "2"}
    # Source untouched.
    assert s3.get_object(Bucket="vb", Key=src)["Body"].read() == b"copy me"
    print("copy placements relative to the source:", dict(seen))


def test_copy_across_backends(env, s3, prefix):
    """`vb` and `flat` have no backend in common: the copy has to move bytes between providers."""
    src = prefix + "cross-src é"
    body = h.payload(6 * MiB + 1, "cross")
    s3.put_object(Bucket="vb", Key=src, Body=body)
    s3.copy_object(Bucket="flat", Key=src, CopySource={"Bucket": "vb", "Key": src})
    assert s3.get_object(Bucket="flat", Key=src)["Body"].read() == body
    assert len(env.vb("flat").placement(src)) == 1
    # And back, with a Range copy through UploadPartCopy.
    dst = prefix + "cross-back"
    upload_id = s3.create_multipart_upload(Bucket="vb", Key=dst)["UploadId"]
    p1 = s3.upload_part_copy(
        Bucket="vb", Key=dst, UploadId=upload_id, PartNumber=1,
        CopySource={"Bucket": "flat", "Key": src}, CopySourceRange=f"bytes=0-{5 * MiB - 1}",
    )
    p2 = s3.upload_part_copy(
        Bucket="vb", Key=dst, UploadId=upload_id, PartNumber=2,
        CopySource={"Bucket": "flat", "Key": src}, CopySourceRange=f"bytes={5 * MiB}-{6 * MiB}",
    )
    s3.complete_multipart_upload(
        Bucket="vb", Key=dst, UploadId=upload_id,
        MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]},
            {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]},
        ]},
    )
    assert s3.get_object(Bucket="vb", Key=dst)["Body"].read() == body


def test_copy_missing_source(env, s3, prefix):
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="vb", Key=prefix + "d", CopySource={"Bucket": "vb", "Key": prefix + "missing"})
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


def test_delete_objects_thousand_keys(env, prefix):
    s3 = env.gw.client(max_pool_connections=16)
    keys = [f"{prefix}del/{i:04d}" for i in range(1000)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="vb", Key=k, Body=b"d"), keys))
    where = env.vb("vb").placements(prefix)
    assert len(where) == 1000
    assert set(where.values()) == {"b1", "b2", "b3"}

    r = s3.delete_objects(Bucket="vb", Delete={"Objects": [{"Key": k} for k in keys]})
    assert r.get("Errors", []) == []
    assert sorted(d["Key"] for d in r["Deleted"]) == keys
    assert s3.list_objects_v2(Bucket="vb", Prefix=prefix).get("KeyCount", 0) == 0
    assert env.vb("vb").placements(prefix) == {}


def test_delete_objects_quiet_and_missing(env, s3, prefix):
    s3.put_object(Bucket="vb", Key=prefix + "a", Body=b"a")
    r = s3.delete_objects(
        Bucket="vb",
        Delete={"Objects": [{"Key": prefix + "a"}, {"Key": prefix + "never-existed"}], "Quiet": True},
    )
    assert r.get("Errors", []) == []
    assert r.get("Deleted", []) == []
    assert env.vb("vb").placement(prefix + "a") == []
    # Deleting a missing key is a success, as on S3.
    s3.delete_object(Bucket="vb", Key=prefix + "never-existed")
