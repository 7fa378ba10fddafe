"""Running the server: backend outages, metadata loss, reindex, dev mode, check, SIGTERM."""

import re
import shlex
import signal
import socket
import subprocess
import time

import requests
from botocore.exceptions import ClientError

import harness as h


def test_backend_outage(make_gateway, make_moto, moto1):
    """A provider stops answering mid-test.

    The outage is simulated with SIGSTOP/SIGCONT rather than killing moto: moto keeps objects in
    memory only, so a killed and restarted moto would come back empty and "no object is lost"
    could not be checked. A stopped process keeps its data and its port, and is the harder
    case for the gateway: connections are accepted by the kernel and then hang, as with a
    provider that is down behind a load balancer."""
    flaky = make_moto("flaky")
    gw = make_gateway(
        3,
        providers=[moto1, moto1, flaky],  # g3 on the provider that will stop
        strategy="round-robin",
        health_check_period="1s",
        probe_timeout="1s",
        fall=1,
        rise=1,
    )
    s3 = gw.client(read_timeout=15)

    before = {f"before-{i}": h.payload(1000 + i, f"b{i}") for i in range(9)}
    for k, v in before.items():
        s3.put_object(Bucket="data", Key=k, Body=v)
    on_flaky = [k for k, b in gw.vbucket("data").placements("").items() if b == "g3"]
    assert len(on_flaky) == 3

    assert h.wait_until(
        "g3 healthy", lambda: h.metric_value(gw.metrics(), "s3_balance_bucket_healthy", bucket="g3") == 1.0, 10
    )
    flaky.proc.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        # Within a few health periods /metrics shows it down.
        h.wait_until(
            "g3 unhealthy in /metrics",
            lambda: h.metric_value(gw.metrics(), "s3_balance_bucket_healthy", bucket="g3") == 0.0,
            8,
            interval=0.2,
        )
        print(f"marked unhealthy after {time.monotonic() - t0:.1f}s")
        assert h.metric_value(gw.metrics(), "s3_balance_bucket_healthy", bucket="g1") == 1.0

        # Writes go on, on the others.
        during = {f"during-{i}": h.payload(500 + i, f"d{i}") for i in range(6)}
        for k, v in during.items():
            t = time.monotonic()
            s3.put_object(Bucket="data", Key=k, Body=v)
            assert time.monotonic() - t < 5, f"write of {k} took {time.monotonic() - t:.1f}s"
        for k in during:
            assert gw.vbucket("data").backends[0].has(f"data/{k}") or gw.vbucket("data").backends[1].has(f"data/{k}")

        # Reads of the other backends' objects work; reads of its objects fail fast with 503.
        for k in before:
            if k not in on_flaky:
                assert s3.get_object(Bucket="data", Key=k)["Body"].read() == before[k]
        for k in on_flaky:
            t = time.monotonic()
            r = h.signed_request("GET", f"{gw.endpoint}/data/{k}", timeout=20)
            elapsed = time.monotonic() - t
            assert r.status_code == 503, (r.status_code, r.text[:300])
            assert h.error_code(r) in ("ServiceUnavailable", "SlowDown"), r.text
            assert elapsed < 5, f"503 took {elapsed:.1f}s"
        # Listings still answer (from the healthy backends), quickly.
        t = time.monotonic()
        try:
            s3.list_objects_v2(Bucket="data")
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert time.monotonic() - t < 10
    finally:
        flaky.proc.signal(signal.SIGCONT)

    h.wait_until(
        "g3 healthy again",
        lambda: h.metric_value(gw.metrics(), "s3_balance_bucket_healthy", bucket="g3") == 1.0,
        15,
        interval=0.2,
    )
    # Nothing written before or during the outage is lost.
    for k, v in {**before, **during}.items():
        assert s3.get_object(Bucket="data", Key=k)["Body"].read() == v
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="data")["Contents"])
    assert listed == sorted([*before, *during])


def test_metadata_loss_and_reindex(make_gateway):
    gw = make_gateway(3, strategy="round-robin")
    s3 = gw.client()
    objects = {f"dir{i % 3}/obj-{i} é": h.payload(100 + i, str(i)) for i in range(30)}
    for k, v in objects.items():
        s3.put_object(Bucket="data", Key=k, Body=v, Metadata={"n": str(len(v))})
    assert len(set(gw.vbucket("data").placements("").values())) == 3

    # Lose the index: every object is still readable and listable.
    assert gw.stop() == 0
    assert gw.db_path.exists()
    gw.delete_metadata()
    gw.start()
    for k, v in objects.items():
        assert s3.get_object(Bucket="data", Key=k)["Body"].read() == v
        assert s3.head_object(Bucket="data", Key=k)["ContentLength"] == len(v)
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="data")["Contents"])
    assert listed == sorted(objects)
    # Overwrites after the loss keep a key in one place.
    k0 = next(iter(objects))
    s3.put_object(Bucket="data", Key=k0, Body=b"new")
    assert len(gw.vbucket("data").placement(k0)) == 1
    objects[k0] = b"new"

    # reindex rebuilds the index from the backends' listings.
    assert gw.stop() == 0
    gw.delete_metadata()
    r = gw.run_cli("reindex")
    assert r.returncode == 0, r.stdout + r.stderr
    assert gw.db_path.exists()
    import sqlite3

    with sqlite3.connect(gw.db_path) as db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
        rows = sum(db.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables)
    assert rows >= len(objects), (tables, rows)
    gw.start()
    for k, v in objects.items():
        assert s3.get_object(Bucket="data", Key=k)["Body"].read() == v


def backend_requests(gw, operation: str) -> int:
    """How many `operation` requests the gateway sent to its backends (from /metrics)."""
    total = 0
    for line in gw.metrics().splitlines():
        if line.startswith("s3_balance_backend_operations_total{") and f'operation="{operation}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_overwrites_on_conditional_backends_need_no_head_and_a_misdirected_entry_is_caught(make_gateway):
    """`conditional_writes: true`: an overwrite goes out with the indexed ETag in If-Match
    instead of a HEAD before it; moto answers 404/412 when the entry is wrong, and the key
    still ends up in one place."""
    import sqlite3

    gw = make_gateway(3, strategy="round-robin", conditional_writes=True)
    s3 = gw.client()
    for i in range(3):
        s3.put_object(Bucket="data", Key=f"k{i}", Body=b"v1")
    heads = backend_requests(gw, "HeadObject")
    for i in range(3):
        s3.put_object(Bucket="data", Key=f"k{i}", Body=b"v2")
    assert backend_requests(gw, "HeadObject") == heads, "overwrites sent no HEAD"
    for i in range(3):
        assert s3.get_object(Bucket="data", Key=f"k{i}")["Body"].read() == b"v2"

    # Point k0's entry at a backend that does not hold it, and k1's at its holder with an
    # ETag of another version (a lagging index).
    holder0 = gw.vbucket("data").placement("k0")
    assert len(holder0) == 1
    other = next(b.name for b in gw.backends if b.name not in holder0)
    with sqlite3.connect(gw.db_path) as db:
        db.execute("UPDATE objects SET backend = ? WHERE bucket = 'data' AND key = 'k0'", (other,))
        db.execute("UPDATE objects SET etag = '\"0123\"' WHERE bucket = 'data' AND key = 'k1'")
    holder1 = gw.vbucket("data").placement("k1")
    s3.put_object(Bucket="data", Key="k0", Body=b"v3")
    s3.put_object(Bucket="data", Key="k1", Body=b"v3")
    assert gw.vbucket("data").placement("k0") == holder0, "written where the copy was, once"
    assert gw.vbucket("data").placement("k1") == holder1
    for k in ("k0", "k1"):
        assert s3.get_object(Bucket="data", Key=k)["Body"].read() == b"v3"
    with sqlite3.connect(gw.db_path) as db:
        (backend,) = db.execute("SELECT backend FROM objects WHERE bucket = 'data' AND key = 'k0'").fetchone()
    assert [backend] == holder0, "the entry is repaired"


def test_check_command(make_gateway, make_moto):
    gw = make_gateway(2)
    r = gw.run_cli("check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "g1" in r.stdout and "g2" in r.stdout
    # A backend that does not answer: exit 1, naming it.
    dead = gw.backends[1]
    dead_port = h.free_port()

    class Nowhere:
        endpoint = f"http://127.0.0.1:{dead_port}"
        access_key = "k"
        secret_key = "s"

    real = dead.moto
    dead.moto = Nowhere
    try:
        gw.write_config()
        r = gw.run_cli("check")
        assert r.returncode == 1, r.stdout + r.stderr
        # The line names the backend and why: the connection was refused.
        line = next(l for l in r.stdout.splitlines() if l.startswith("g2"))
        assert "DOWN: Connect" in line and "refused" in line.lower(), r.stdout
        assert "up" in next(l for l in r.stdout.splitlines() if l.startswith("g1"))
    finally:
        dead.moto = real
        gw.write_config()
    # An invalid config: exit non-zero with the key named.
    bad = gw.dir / "bad.yaml"
    bad.write_text(gw.config_text().replace("strategy: round-robin", "strategy: fastest"))
    r = subprocess.run([h.gateway_binary(), "check", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "strategy" in r.stdout + r.stderr


def test_invalid_config_change_keeps_running(make_gateway):
    gw = make_gateway(2)
    s3 = gw.client()
    good = gw.config_path.read_text()
    gw.config_path.write_text(good.replace("buckets:", "bukkets:"))
    time.sleep(3)
    s3.put_object(Bucket="data", Key="still-serving", Body=b"ok")
    assert s3.get_object(Bucket="data", Key="still-serving")["Body"].read() == b"ok"
    assert gw.proc.alive()


def test_sigterm_exits_zero(make_gateway):
    gw = make_gateway(2)
    gw.client().put_object(Bucket="data", Key="k", Body=b"v")
    t = time.monotonic()
    gw.proc.signal(signal.SIGTERM)
    code = gw.proc.popen.wait(15)
    assert code == 0, gw.proc.tail()
    assert time.monotonic() - t < 10


ACCESS_LINE = re.compile(
    r'^\S+Z  INFO s3_balance::http_server: request request_id=[0-9A-F]{16} method=(\w+) '
    r'operation="(\w+)" bucket="data" backend="(g\d)" status=(\d+) bytes=(\d+) '
    r'duration_ms=\d+ complete=(true|false)$',
    re.M,
)


def test_each_request_leaves_one_access_log_line(make_gateway):
    """The access log, as an operator reads it: one line per request with what it did, out of
    the serving process's log buffer within moments."""
    gw = make_gateway(2)
    s3 = gw.client()
    s3.put_object(Bucket="data", Key="logged", Body=b"12345")
    assert s3.get_object(Bucket="data", Key="logged")["Body"].read() == b"12345"
    lines = h.wait_until(
        "two access log lines",
        lambda: (found := ACCESS_LINE.findall(gw.proc.output())) and len(found) >= 2 and found,
        5,
    )
    assert len(lines) == 2, lines
    (put, get) = lines
    assert put[:2] == ("PUT", "PutObject") and put[3:] == ("200", "5", "true"), put
    assert get[:2] == ("GET", "GetObject") and get[3:] == ("200", "5", "true"), get
    assert put[2] == get[2], "read from the backend it was written to"


def test_sigterm_lets_a_request_in_flight_finish(make_gateway):
    gw = make_gateway(2)
    s3 = gw.client()
    body = h.payload(20 * 1024 * 1024, "inflight")
    s3.put_object(Bucket="data", Key="big", Body=body)
    # A download is in flight (1 MiB of 20 read) when SIGTERM arrives.
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "data", "Key": "big"}, ExpiresIn=300)
    with requests.get(presigned, stream=True, timeout=30) as resp:
        assert resp.status_code == 200
        first = resp.raw.read(1024 * 1024)
        gw.proc.signal(signal.SIGTERM)
        rest = resp.raw.read()
    assert first + rest == body
    assert gw.proc.popen.wait(15) == 0


def test_dev_mode_refuses_a_busy_port_before_starting_anything(tmp_path):
    with socket.socket() as busy:
        busy.bind((h.HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = tmp_path / "never-created"
        r = subprocess.run([h.gateway_binary(), "dev", "--data", str(data), "--port", str(port)],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use; choose another with --port" in r.stderr, r.stderr
    assert not data.exists()


def test_dev_mode(logs, tmp_path):
    port = h.free_port()
    data = tmp_path / "dev-data"
    proc = h.Proc("dev", [h.gateway_binary(), "dev", "--data", str(data), "--port", str(port)], tmp_path)
    try:
        out = h.wait_until("dev mode banner", lambda: "Try:" in proc.output() and "curl" in proc.output() and proc.output(), 60)
        if not proc.alive():
            raise AssertionError(proc.tail())
        time.sleep(0.5)
        out = proc.output()
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        endpoint = re.search(r"endpoint:\s+(\S+)", out).group(1)
        assert endpoint == f"http://127.0.0.1:{port}"
        # One `export` line for the keys, then the commands, as a user pastes them.
        export = next(line.strip() for line in out.splitlines() if line.strip().startswith("export "))
        exported = dict(w.split("=", 1) for w in shlex.split(export)[1:])
        assert exported["AWS_ACCESS_KEY_ID"] == "devkey", export
        aws_lines = [line.strip() for line in out.splitlines() if line.strip().startswith("aws ")]
        assert len(aws_lines) >= 2, out
        # The data directory is named in full.
        assert f"data in {data.resolve()}" in out, out
        # The console's address and token work.
        console = re.search(r"console:\s+(\S+) \(token: (\S+)\)", out)
        assert requests.get(console.group(1), timeout=5).status_code == 200
        assert requests.get(console.group(1) + "api/health", timeout=5,
                            headers={"Authorization": f"Bearer {console.group(2)}"}).json()["status"] == "healthy"
        work = tmp_path / "work"
        work.mkdir()
        (work / "README.md").write_text("# hello from the e2e suite\n")
        results = []
        for line in aws_lines:
            words = shlex.split(line)
            env = {**h.aws_env("x", "x", tmp_path), **exported}
            words[0] = h.tool("aws")
            results.append(h.run(words, env=env, cwd=work))
        assert "README.md" in results[-1].stdout
        # The files really are on one of the three local backends.
        stored = [p for p in data.rglob("README.md*") if p.is_file()]
        assert stored, list(data.rglob("*"))[:50]
        # The printed curl command works.
        curl_line = next(line.strip() for line in out.splitlines() if line.strip().startswith("curl"))
        words = shlex.split(curl_line)
        r = h.run(words + ["-sS", "-f"])
        assert "Hello from s3-balance dev mode" in r.stdout
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()

    # Its data survives a restart in the same data dir.
    proc = h.Proc("dev-again", [h.gateway_binary(), "dev", "--data", str(data), "--port", str(port)], tmp_path)
    try:
        h.wait_until("dev restarted", lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok, 60)
        s3 = h.s3_client(f"http://127.0.0.1:{port}", "devkey", "devsecret")
        assert s3.get_object(Bucket="dev", Key="README.md")["Body"].read() == b"# hello from the e2e suite\n"
    finally:
        proc.stop()


def test_reindex_dry_run_reports_duplicates_and_reindex_removes_the_older_copy(make_gateway):
    gw = make_gateway(3, strategy="round-robin")
    s3 = gw.client()
    for i in range(6):
        s3.put_object(Bucket="data", Key=f"dup/k{i}", Body=f"v{i}".encode())
    vb = gw.vbucket("data")
    live = vb.placement("dup/k3")[0]
    other = next(b for b in vb.backends if b.name != live)
    # An older copy on another backend, as a failure could leave one (planted first, then the
    # key overwritten through the gateway a second later: Last-Modified has whole seconds).
    other.s3.put_object(Bucket=other.bucket, Key=vb.real_key("dup/k3"), Body=b"old")
    time.sleep(1.1)
    s3.put_object(Bucket="data", Key="dup/k3", Body=b"new")
    assert sorted(vb.placement("dup/k3")) == sorted([live, other.name])
    assert gw.stop() == 0
    gw.delete_metadata()

    r = h.run([h.gateway_binary(), "reindex", "--dry-run", "--config", str(gw.config_path)])
    assert "duplicate data/dup/k3: live on" in r.stdout, r.stdout
    assert "dry run: 6 objects" in r.stdout and "duplicates 1" in r.stdout, r.stdout
    assert sorted(vb.placement("dup/k3")) == sorted([live, other.name]), "a dry run removes nothing"

    r = h.run([h.gateway_binary(), "reindex", "--config", str(gw.config_path)])
    assert "reindexed 6 objects" in r.stdout and "older copies removed 1" in r.stdout, r.stdout
    assert vb.placement("dup/k3") == [live]
    gw.start()
    assert s3.get_object(Bucket="data", Key="dup/k3")["Body"].read() == b"new"
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="data", Prefix="dup/")["Contents"]]
    assert listed == [f"dup/k{i}" for i in range(6)]
