"""The compose `replicas` profile, as processes: two gateways (the image's static binary) with
config.replicas.yaml's metadata (DynamoDB; here moto_server's), behind nginx running
deploy/compose/nginx.conf (its upstream and listen addresses moved to 127.0.0.1).

What the profile promises: clients use one address; the replicas share the index, usage and
budgets (each reports the usage of writes the other served); a multipart upload whose
requests land on different replicas completes (the shared upload_id_secret).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

import boto3
import requests
import yaml

import harness as h
from deploy_support import DEPLOY, need

TABLE = "s3-balance"


@dataclass
class SharedGateway(h.Gateway):
    """A harness gateway whose metadata is config.replicas.yaml's (DynamoDB)."""

    def config_text(self, **changes) -> str:
        doc = yaml.safe_load(super().config_text(**changes))
        shipped = yaml.safe_load((DEPLOY / "compose" / "config.replicas.yaml").read_text().replace("${", "x{"))
        doc["metadata"] = shipped["metadata"]
        assert doc["metadata"] == {"type": "dynamodb", "table": TABLE}
        return yaml.safe_dump(doc, sort_keys=False)


def nginx_conf(ports: list[int], listen: int, prefix) -> str:
    """deploy/compose/nginx.conf with the replicas and the listening port on 127.0.0.1 and its
    scratch files in `prefix`; everything else as shipped."""
    text = (DEPLOY / "compose" / "nginx.conf").read_text()
    server = re.search(r"^\s*server gateway:8080([^;]*);$", text, re.M)
    assert server, "nginx.conf no longer has `server gateway:8080 ...;`"
    replicas = "".join(f"        server {h.HOST}:{p}{server.group(1)};\n" for p in ports)
    text = text.replace(server.group(0) + "\n", replicas)
    assert "listen 8080;" in text
    text = text.replace("listen 8080;", f"listen {h.HOST}:{listen};")
    return text.replace("/tmp/", f"{prefix}/")


def usage(gw: h.Gateway) -> float:
    text = gw.metrics()
    return sum(h.metric_value(text, "s3_balance_bucket_usage_bytes", bucket=b.name) or 0 for b in gw.backends)


def requests_served(gw: h.Gateway) -> float:
    text = gw.metrics()
    return sum(float(v) for v in re.findall(r"^s3_balance_s3_operations_total\{[^}]*\} (\S+)$", text, re.M))


def test_two_replicas_behind_nginx_share_one_metadata_store(
    logs, moto1, moto2, static_binary, monkeypatch, tmp_path, dump_logs_on_failure
):
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin") or need("nginx")
    monkeypatch.setenv("S3_BALANCE_BIN", str(static_binary))
    # The DynamoDB store reads the standard AWS environment, as in compose.
    for k, v in dict(
        AWS_ENDPOINT_URL_DYNAMODB=moto2.endpoint, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test", AWS_EC2_METADATA_DISABLED="true",
    ).items():
        monkeypatch.setenv(k, v)
    ddb = boto3.client("dynamodb", endpoint_url=moto2.endpoint, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    # The table as compose's dynamodb-table service creates it.
    ddb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    r1 = h.Backend("r1", moto1, "replicas-one")
    r2 = h.Backend("r2", moto2, "replicas-two")
    for b in (r1, r2):
        b.moto.create_bucket(b.bucket)
    # Probes patient enough for a loaded 2-core machine: a backend must not flap.
    options = {"health_check_period": "1s", "update_stats_period": "2s", "probe_timeout": "5s", "fall": 3}
    replicas = [
        SharedGateway(logs / f"gateway-replica-{i}", [r1, r2], [h.VBucket("shared", [r1, r2])], dict(options))
        for i in (1, 2)
    ]
    lb_port = h.free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    prefix.chmod(0o777)  # nginx's workers (nobody, when started as root) write its temp files
    conf = prefix / "nginx.conf"
    lb = None
    try:
        for gw in replicas:
            gw.start()
            dump_logs_on_failure.append(gw.proc)
        conf.write_text(nginx_conf([gw.port for gw in replicas], lb_port, prefix))
        check = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        lb = h.Proc("nginx", [nginx, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log"),
                              "-g", "daemon off;"], tmp_path)
        endpoint = f"http://{h.HOST}:{lb_port}"
        h.wait_until("nginx", lambda: requests.get(endpoint + "/health", timeout=2).status_code == 200, 20)

        # One address: writes and reads through nginx, spread over both replicas.
        s3 = h.s3_client(endpoint, h.ADMIN_KEY, h.ADMIN_SECRET)
        stored = {}
        for i in range(12):
            body = h.payload(10_000 + i * 1000, f"replica-{i}")
            s3.put_object(Bucket="shared", Key=f"k/{i:02d}", Body=body)
            stored[f"k/{i:02d}"] = body
        for key, body in stored.items():
            assert s3.get_object(Bucket="shared", Key=key)["Body"].read() == body
        assert all(requests_served(gw) > 0 for gw in replicas), "nginx sent every request to one replica"
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket="shared", Prefix="k/")["Contents"]]
        assert listed == sorted(stored)

        # A multipart upload through nginx: its requests land on both replicas.
        part = h.payload(5 * 1024 * 1024, "part")
        upload = s3.create_multipart_upload(Bucket="shared", Key="big")["UploadId"]
        parts = []
        for n in (1, 2, 3):
            etag = s3.upload_part(Bucket="shared", Key="big", UploadId=upload, PartNumber=n, Body=part)["ETag"]
            parts.append({"PartNumber": n, "ETag": etag})
        s3.complete_multipart_upload(Bucket="shared", Key="big", UploadId=upload, MultipartUpload={"Parts": parts})
        stored["big"] = part * 3
        for gw in replicas:
            assert gw.client().get_object(Bucket="shared", Key="big")["Body"].read() == part * 3

        # One index: every object's entry is in the shared table ...
        items = []
        for page in ddb.get_paginator("scan").paginate(TableName=TABLE):
            items += page["Items"]
        indexed = {i["sk"]["S"] for i in items if i["pk"]["S"] == "o#shared"}
        assert indexed == set(stored), indexed ^ set(stored)
        # ... and one usage: each replica reports all the bytes, both its writes and the
        # other's.
        total = sum(len(b) for b in stored.values())
        for gw in replicas:
            h.wait_until(f"{gw.dir.name} reports the shared usage", lambda gw=gw: usage(gw) == total, 20)
    finally:
        if lb:
            lb.stop()
        for gw in replicas:
            gw.stop()
