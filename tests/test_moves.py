"""`s3-balance drain` and `s3-balance rebalance` next to a serving gateway, with real clients:
objects move between real buckets while others read, write and delete, and afterwards every
object reads back its sha256 and lives once; none was unreadable at any sample during the move;
a killed drain resumes; after adding a fourth backend under consistent-hash about 1/4 moves.
The admin API starts the same runs (the Worker and Lambda continue them on their schedule)."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError
import requests

import harness as h

TOKEN = "e2e-moves-token"


def cli(gw, *args, **kw):
    return subprocess.Popen(
        [h.gateway_binary(), *args, "--config", str(gw.config_path), "--settle", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


def put_many(s3, bodies: dict[str, bytes]):
    for key, body in bodies.items():
        s3.put_object(Bucket="data", Key=key, Body=body)


def verify(s3, expected: dict[str, bytes], gone: set[str]):
    for key, body in expected.items():
        got = s3.get_object(Bucket="data", Key=key)["Body"].read()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest(), key
    for key in gone:
        with pytest.raises(s3.exceptions.NoSuchKey):
            s3.get_object(Bucket="data", Key=key)


class Load:
    """Reads of objects nobody changes (each must answer its bytes at every sample), writes of
    new keys, overwrites and deletes of others, until stopped; bounded in time."""

    def __init__(self, gw, stable: dict[str, bytes], hot: list[str]):
        self.s3 = gw.client()
        self.stable = list(stable.items())
        self.hot = hot
        self.expected: dict[str, bytes] = {}
        self.deleted: set[str] = set()
        self.unreadable: list[str] = []
        self.reads = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.read, daemon=True),
                        threading.Thread(target=self.write, daemon=True)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def read(self):
        s3 = h.s3_client(self.s3.meta.endpoint_url, h.ADMIN_KEY, h.ADMIN_SECRET)
        rng = random.Random(1)
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            key, body = rng.choice(self.stable)
            try:
                got = s3.get_object(Bucket="data", Key=key)["Body"].read()
                if got != body:
                    self.unreadable.append(f"{key}: wrong bytes")
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                self.unreadable.append(f"{key}: {e}")
            self.reads += 1

    def write(self):
        rng = random.Random(2)
        deadline = time.monotonic() + 300
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            i += 1
            if i % 3 == 0 and self.hot:
                key = self.hot.pop()
                self.s3.delete_object(Bucket="data", Key=key)
                self.deleted.add(key)
                self.expected.pop(key, None)
            else:
                key = rng.choice(self.hot) if i % 3 == 1 and self.hot else f"new/{i}"
                body = h.payload(100 + i % 3000, f"w{i}")
                self.s3.put_object(Bucket="data", Key=key, Body=body)
                self.expected[key] = body
                self.deleted.discard(key)
            time.sleep(0.005)


@pytest.mark.timeout(600)
def test_drain_under_load_is_resumable_and_leaves_every_object_readable_once(make_gateway):
    gw = make_gateway(3, admin_token=TOKEN)
    s3 = gw.client()
    stable = {f"stable/{i:04d}": h.payload(200 + (i * 37) % 5000, f"s{i}") for i in range(1800)}
    hot = {f"hot/{i:03d}": h.payload(300 + i, f"h{i}") for i in range(200)}
    put_many(s3, {**stable, **hot})
    g1 = gw.backends[0]
    on_g1 = len(g1.moto.keys(g1.bucket))
    assert on_g1 > 400, on_g1
    time.sleep(2)  # older than --settle 1

    # A dry run moves nothing and says how much would.
    dry = cli(gw, "drain", "g1", "--dry-run")
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 0, err
    assert f"{on_g1} of 2000 objects would move" in out, out
    assert len(g1.moto.keys(g1.bucket)) == on_g1

    with Load(gw, stable, list(hot)) as load:
        # Killed once it has moved something (JSON progress lines on a pipe), then resumed.
        # The hot keys come first and the load keeps rewriting them (too recent to move), so
        # a fixed number of lines may all say `"moved":0`.
        first = cli(gw, "drain", "g1", "--batch", "50")
        for _ in range(400):
            line = first.stderr.readline()
            assert line, first.stdout.read()
            if line.startswith("{") and json.loads(line)["moved"] > 0:
                break
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        assert 0 < len(g1.moto.keys(g1.bucket)) < on_g1, "partly drained"
        second = cli(gw, "drain", "g1")
        out, err = second.communicate(timeout=400)
        assert second.returncode == 0, out + err
        assert "resuming a run" in err, err
        time.sleep(0.5)
    assert load.reads > 100
    assert load.unreadable == [], load.unreadable[:10]
    assert "drain g1:" in out and "0 left" in out, out

    assert g1.moto.keys(g1.bucket) == [], "g1 is empty"
    expected = {**stable, **{k: v for k, v in hot.items() if k not in load.deleted}, **load.expected}
    for k in load.deleted:
        expected.pop(k, None)
    verify(s3, expected, load.deleted)
    placements = gw.vbucket("data").placements()  # fails on a key living twice
    assert set(placements) == set(expected)
    # g1 is read-only for every gateway until the operator says otherwise.
    listing = requests.get(f"{gw.endpoint}/_admin/api/buckets/g1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    assert listing["read_only"] is True


@pytest.mark.timeout(600)
def test_consistent_hash_rebalance_under_load_after_adding_a_fourth_backend_moves_about_a_quarter(make_gateway, moto2):
    gw = make_gateway(3, strategy="consistent-hash", admin_token=TOKEN)
    s3 = gw.client()
    stable = {f"stable/{i:04d}": h.payload(100 + (i * 53) % 4000, f"c{i}") for i in range(1800)}
    hot = {f"hot/{i:03d}": h.payload(200 + i, f"ch{i}") for i in range(200)}
    put_many(s3, {**stable, **hot})
    g4 = h.Backend("g4", moto2, gw.backends[0].bucket.replace("real-1", "real-4"))
    moto2.create_bucket(g4.bucket)
    gw.backends.append(g4)
    assert gw.vbucket("data").backends[-1] is g4
    gw.write_config()
    h.wait_until("the gateway sees g4", lambda: requests.get(
        f"{gw.endpoint}/_admin/api/buckets/g4", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).ok, 20)
    time.sleep(2)
    with Load(gw, stable, list(hot)) as load:
        run = cli(gw, "rebalance")
        out, err = run.communicate(timeout=400)
        time.sleep(0.5)
    assert run.returncode == 0, out + err
    assert load.reads > 100
    assert load.unreadable == [], load.unreadable[:10]
    moved = int(out.split("rebalance: ")[1].split(" objects")[0])
    fraction = moved / 2000
    assert abs(fraction - 0.25) <= 0.025, f"moved {moved} of 2000"
    # Only what g4 now wins moved there: every stable object g4 holds hashes to it.
    on_g4 = {k for k, b in gw.vbucket("data").placements("stable/").items() if b == "g4"}
    assert on_g4 and len(on_g4) <= moved
    expected = {**stable, **{k: v for k, v in hot.items() if k not in load.deleted}, **load.expected}
    for k in load.deleted:
        expected.pop(k, None)
    verify(s3, expected, load.deleted)
    assert set(gw.vbucket("data").placements()) == set(expected), "each object once"
    # Already balanced: a second run moves nothing.
    again = cli(gw, "rebalance", "--restart")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "rebalance: 0 objects" in out, out + err


def test_the_admin_api_starts_a_drain_and_steps_it(make_gateway):
    gw = make_gateway(2, admin_token=TOKEN)
    s3 = gw.client()
    bodies = {f"a/{i}": f"admin-{i}".encode() for i in range(12)}
    put_many(s3, bodies)
    time.sleep(2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = requests.post(f"{gw.endpoint}/_admin/api/drain/g2", json={"settle_secs": 1}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["goal"] == {"Drain": "g2"}
    # The serving gateway's scheduled job goes on with it (a step every 5 s).
    h.wait_until("drained", lambda: requests.get(f"{gw.endpoint}/_admin/api/moves", headers=auth, timeout=5).json()["done"], 60)
    g2 = gw.backends[1]
    assert g2.moto.keys(g2.bucket) == []
    verify(s3, bodies, set())
    bad = requests.post(f"{gw.endpoint}/_admin/api/drain/nope", headers=auth, timeout=10)
    assert bad.status_code == 404 and bad.json()["code"] == "NoSuchBucket"
    # The other move calls: progress, a step of a finished run, a rebalance started and stopped.
    assert requests.post(f"{gw.endpoint}/_admin/api/moves/step", headers=auth, timeout=30).json()["done"] is True
    started = requests.post(f"{gw.endpoint}/_admin/api/rebalance", json={"settle_secs": 1}, headers=auth, timeout=30)
    assert started.status_code == 200 and started.json()["goal"] == "Rebalance", started.text
    stopped = requests.delete(f"{gw.endpoint}/_admin/api/moves", headers=auth, timeout=30).json()
    assert stopped["goal"] == "Rebalance" and stopped["done"] is True
    # A second goal while one runs is refused with an S3 code.
    requests.post(f"{gw.endpoint}/_admin/api/rebalance", json={"settle_secs": 1}, headers=auth, timeout=30)
    busy = requests.post(f"{gw.endpoint}/_admin/api/drain/g1", headers=auth, timeout=30)
    if not requests.get(f"{gw.endpoint}/_admin/api/moves", headers=auth, timeout=5).json()["done"]:
        assert busy.status_code == 400 and busy.json()["code"] == "InvalidRequest", busy.text
    requests.delete(f"{gw.endpoint}/_admin/api/moves", headers=auth, timeout=30)


def objects_on_g1(make_gateway, keys):
    """A gateway of three backends whose bucket `data` holds `keys` (each its own name as
    body), all on g1, the bucket's pool for now."""
    gw = make_gateway(3, strategy="round-robin")
    vb = gw.vbucket("data")
    g1 = gw.backends[0]
    vb.backends = [g1]
    gw.write_config()
    gw.restart()
    s3 = gw.client()
    for key in keys:
        s3.put_object(Bucket="data", Key=key, Body=key.encode())
        assert g1.has(vb.real_key(key))
    return gw, vb, s3


def test_a_backend_taken_out_of_the_pool_without_a_drain_leaves_no_copy_to_come_back(make_gateway):
    """The config takes g1 out of the pool while it holds objects (no drain first): the reload
    says so, its objects still read through the index, and an overwrite, a DELETE and a
    DeleteObjects reach their copies there, so nothing deleted or overwritten comes back when
    g1 rejoins the pool."""
    gw, vb, s3 = objects_on_g1(make_gateway, ["over", "gone", "batch", "kept"])
    g1, g2, g3 = gw.backends

    vb.backends = [g2, g3]
    gw.write_config()
    h.wait_until("the reload's warning", lambda: 'backend "g1" left the pool of bucket "data"' in gw.proc.output(), 30)
    assert s3.get_object(Bucket="data", Key="kept")["Body"].read() == b"kept"
    s3.put_object(Bucket="data", Key="over", Body=b"v2")
    s3.delete_object(Bucket="data", Key="gone")
    answer = s3.delete_objects(Bucket="data", Delete={"Objects": [{"Key": "batch"}]})
    assert [d["Key"] for d in answer.get("Deleted", [])] == ["batch"] and not answer.get("Errors"), answer
    for key in ["over", "gone", "batch"]:
        assert not g1.has(vb.real_key(key)), f"{key}: the copy out of the pool is left behind"
    assert g1.has(vb.real_key("kept"))

    vb.backends = [g1, g2, g3]
    gw.write_config()

    def listed():
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="data").get("Contents", []))

    h.wait_until("g1 back in the pool", lambda: listed() == ["kept", "over"], 30)
    assert s3.get_object(Bucket="data", Key="over")["Body"].read() == b"v2"
    for key in ["gone", "batch"]:
        with pytest.raises(s3.exceptions.NoSuchKey):
            s3.get_object(Bucket="data", Key=key)


def test_a_backend_taken_out_of_the_config_brings_nothing_back(make_gateway):
    """The config drops g1 altogether while it holds objects (no drain first): the reload says
    so; reads and deletes of its objects answer 503 (never a false 404, and nothing changes);
    an overwrite lands in the pool. Configured again, g1 serves what was not overwritten, and
    the maintenance task removes the copy the overwrite left there: nothing comes back."""
    gw, vb, s3 = objects_on_g1(make_gateway, ["over", "kept"])
    g1, g2, g3 = gw.backends

    gw.backends = [g2, g3]
    vb.backends = [g2, g3]
    gw.write_config()
    h.wait_until("the reload's warning", lambda: 'backend "g1" is no longer configured' in gw.proc.output(), 30)

    def refused(call):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503, e.value.response
        assert e.value.response["Error"]["Code"] == "ServiceUnavailable", e.value.response

    for key in ["over", "kept"]:
        refused(lambda: s3.get_object(Bucket="data", Key=key))
        refused(lambda: s3.delete_object(Bucket="data", Key=key))
        answer = s3.delete_objects(Bucket="data", Delete={"Objects": [{"Key": key}]})
        assert not answer.get("Deleted") and answer["Errors"][0]["Code"] == "ServiceUnavailable", answer
        assert g1.has(vb.real_key(key)), f"{key}: deleted while g1 cannot be asked"
    s3.put_object(Bucket="data", Key="over", Body=b"v2")
    assert s3.get_object(Bucket="data", Key="over")["Body"].read() == b"v2"
    refused(lambda: s3.delete_object(Bucket="data", Key="over"))

    gw.backends = [g1, g2, g3]
    vb.backends = [g1, g2, g3]
    gw.write_config()
    h.wait_until("the copy left on g1 removed", lambda: not g1.has(vb.real_key("over")), 30)
    assert s3.get_object(Bucket="data", Key="over")["Body"].read() == b"v2"
    assert s3.get_object(Bucket="data", Key="kept")["Body"].read() == b"kept"
    s3.delete_object(Bucket="data", Key="over")
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="data").get("Contents", []))
    assert listed == ["kept"]
