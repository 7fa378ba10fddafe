"""Gateway clusters on one PostgreSQL (issue 13): a single gateway's SQLite metadata is moved with
`s3-balance migrate`, then two `s3-balance serve` instances share it. What one instance does, the
other sees: objects (read, listed, overwritten, deleted across instances, never on two backends),
buckets created at run time, a strategy switch made in one instance's config file, the health
snapshot, and usage counters that stay exact with 32 clients spread over both."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time

import pytest
import requests

import harness as h
from sql_servers import Postgres


@pytest.fixture(scope="module")
def postgres(logs):
    pg = Postgres(logs)
    try:
        yield pg
    finally:
        pg.stop()


def usage_bytes(gw: h.Gateway, backends) -> int:
    text = gw.metrics()
    return sum(int(h.metric_value(text, "s3_balance_bucket_usage_bytes", bucket=b.name) or 0) for b in backends)


def test_two_instances_on_one_postgresql(logs, moto1, moto2, postgres, request):
    backends = []
    for i, moto in enumerate([moto1, moto1, moto2]):
        b = h.Backend(f"c{i + 1}", moto, f"cluster-real-{i + 1}")
        moto.create_bucket(b.bucket)
        backends.append(b)
    vb = h.VBucket("data", backends)
    common = {"update_stats_period": "1h", "allow_create_bucket": True}
    gateways: list[h.Gateway] = []
    try:
        # One gateway on SQLite, as users start; it creates a bucket and writes an object.
        single = h.Gateway(logs / "cluster-single", backends, [vb], dict(common))
        gateways.append(single)
        single.start()
        s3 = single.client()
        s3.create_bucket(Bucket="made-on-sqlite")
        s3.put_object(Bucket="made-on-sqlite", Key="old", Body=b"from the single gateway")
        single.stop()

        # Its metadata moves to PostgreSQL.
        url = postgres.create_database("cluster")
        moved = h.run([h.gateway_binary(), "migrate", "--from", f"sqlite:{single.db_path}", "--to", url], timeout=60)
        assert re.search(r"migrated 1 index entries in 1 buckets, 1 bucket records", moved.stdout), moved.stdout

        metadata = {"type": "postgres", "url": url}
        a = h.Gateway(logs / "cluster-a", backends, [vb], {**common, "metadata": metadata})
        # B probes health only once, at start: what it shows later is A's snapshot.
        b = h.Gateway(logs / "cluster-b", backends, [vb], {**common, "metadata": metadata, "health_check_period": "1h"})
        gateways += [a, b]
        a.start()
        b.start()
        ca, cb = a.client(), b.client()

        # The bucket made on SQLite, and its object, are there for both.
        for c in (ca, cb):
            assert "made-on-sqlite" in [x["Name"] for x in c.list_buckets()["Buckets"]]
            assert c.get_object(Bucket="made-on-sqlite", Key="old")["Body"].read() == b"from the single gateway"

        # Written through A: read, listed, overwritten and deleted through B, on one backend.
        ca.put_object(Bucket="data", Key="shared/k1", Body=b"one")
        assert cb.get_object(Bucket="data", Key="shared/k1")["Body"].read() == b"one"
        assert cb.head_object(Bucket="data", Key="shared/k1")["ContentLength"] == 3
        assert [o["Key"] for o in cb.list_objects_v2(Bucket="data", Prefix="shared/")["Contents"]] == ["shared/k1"]
        first = vb.placement("shared/k1")
        cb.put_object(Bucket="data", Key="shared/k1", Body=b"two, longer")
        assert ca.get_object(Bucket="data", Key="shared/k1")["Body"].read() == b"two, longer"
        assert vb.placement("shared/k1") == first, "an overwrite through B stays where A put it"
        cb.delete_object(Bucket="data", Key="shared/k1")
        with pytest.raises(ca.exceptions.NoSuchKey):
            ca.get_object(Bucket="data", Key="shared/k1")
        assert vb.placement("shared/k1") == []
        # A bucket created through B exists for A.
        cb.create_bucket(Bucket="made-on-b")
        ca.put_object(Bucket="made-on-b", Key="x", Body=b"x")
        assert cb.get_object(Bucket="made-on-b", Key="x")["Body"].read() == b"x"

        # A strategy switch written in A's config file reaches B through the store.
        a.write_config(strategy="least-space")
        n = itertools.count()

        def b_uses_least_space():
            cb.put_object(Bucket="data", Key=f"switch/{next(n)}", Body=b"s")
            # `bucket` is the backend chosen, as in the Go s3-balance.
            value = h.metric_value(b.metrics(), "s3_balance_balancer_decisions_total", strategy="least-space")
            return value and value > 0

        h.wait_until("B placing with least-space", b_uses_least_space, 20, interval=0.5)
        assert "least-space" in postgres.psql("cluster", "SELECT value FROM s3balance_documents WHERE name = 'config'")

        # Health: B shows the snapshots A keeps taking (B itself probed once, at start).
        taken = json.loads(requests.get(b.endpoint + "/health", timeout=5).text)["taken_at"]
        h.wait_until(
            "B's health snapshot advancing with A's probes",
            lambda: json.loads(requests.get(b.endpoint + "/health", timeout=5).text)["taken_at"] >= taken + 3,
            20,
            interval=0.5,
        )

        # Usage: 32 clients over both instances, counted exactly by both.
        time.sleep(3)  # pending counts flushed by both (refresh every 2 s)
        before = usage_bytes(a, backends)
        before_objects = int(postgres.psql("cluster", "SELECT COALESCE(SUM(objects), 0) FROM s3balance_usage"))
        sizes = [[1000 + 37 * c + i for i in range(6)] for c in range(32)]
        errors = []

        def client(c: int):
            try:
                s3c = (a if c % 2 else b).client()
                for i, size in enumerate(sizes[c]):
                    s3c.put_object(Bucket="data", Key=f"load/{c}/{i}", Body=h.payload(size, f"{c}-{i}"))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:3]
        total = sum(map(sum, sizes))
        for gw in (a, b):
            h.wait_until(
                f"{gw.dir.name} counting {total} more bytes",
                lambda gw=gw: usage_bytes(gw, backends) == before + total,
                20,
                interval=0.5,
            )
        objects = int(postgres.psql("cluster", "SELECT SUM(objects) FROM s3balance_usage"))
        assert objects == before_objects + 32 * 6
        assert len(vb.placements("load/")) == 32 * 6
    finally:
        failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
        for gw in gateways:
            if failed and gw.proc:
                print(f"\n--- last lines of {gw.proc.log_path} ---\n{gw.proc.tail(60)}")
            gw.stop()
