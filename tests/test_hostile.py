"""Hostile clients and hung backends (issue 11), against the real server over raw sockets.

Each test runs a gateway of its own with short timeouts, so a failure to close a connection
or to give up on a backend shows as a measured time, not as a hung suite. What every test
observed is printed (`pytest -s`) and summarised in docs/reliability.md ("Hostile clients").
"""

from __future__ import annotations

import hashlib
import itertools
import os
import resource
import select
import signal
import socket
import threading
import time

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

import harness as h

_tag = itertools.count()

# The gateway's client-side timeouts in these tests (seconds).
HEADER, IDLE, READ, WRITE = 2.0, 3.0, 2.0, 2.0
# How late a close may come: timers, scheduling on a busy 2-core machine, our polling.
SLACK = 1.5


def server_timeouts(**more) -> dict:
    return {
        "read_header_timeout": f"{HEADER}s",
        "idle_timeout": f"{IDLE}s",
        "read_timeout": f"{READ}s",
        "write_timeout": f"{WRITE}s",
        **more,
    }


@pytest.fixture
def gateways(logs, moto1, request):
    """Factory: a gateway over one fresh backend on `moto` (default moto1), stopped at
    teardown; its log tail is printed when the test fails."""
    started: list[h.Gateway] = []

    def factory(moto=None, command_prefix=None, **options):
        moto = moto or moto1
        tag = f"hostile{next(_tag)}"
        backend = h.Backend("b", moto, f"{tag}-real")
        moto.create_bucket(backend.bucket)
        options.setdefault("health_check_period", "60s")
        gw = h.Gateway(
            logs / f"gateway-{tag}",
            [backend],
            [h.VBucket("data", [backend])],
            options,
            command_prefix=command_prefix or [],
        )
        started.append(gw)
        gw.start()
        return gw

    try:
        yield factory
    finally:
        failed = getattr(request.node, "rep_call", None)
        for gw in started:
            if (failed is None or failed.failed) and gw.proc:
                print(f"\n--- last lines of {gw.proc.log_path} ---\n{gw.proc.tail(40)}")
            gw.stop()


def signed_headers(gw: h.Gateway, method: str, path: str, body: bytes) -> dict:
    """SigV4 headers (payload hash of `body`) for a raw request to the gateway."""
    url = f"{gw.endpoint}{path}"
    req = botocore.awsrequest.AWSRequest(method=method, url=url, data=body, headers={})
    botocore.auth.S3SigV4Auth(
        botocore.credentials.Credentials(h.ADMIN_KEY, h.ADMIN_SECRET), "s3", h.REGION
    ).add_auth(req)
    headers = dict(req.headers.items())
    headers["Host"] = f"{h.HOST}:{gw.port}"
    headers["Content-Length"] = str(len(body))
    return headers


def head_bytes(method: str, path: str, headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(gw: h.Gateway, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect((h.HOST, gw.port))
    return s


def read_response(s: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes (or `timeout`)."""
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def status_and_code(raw: bytes) -> tuple[int | None, str | None]:
    text = raw.decode("latin-1")
    status = int(text.split(" ", 2)[1]) if text.startswith("HTTP/1.1 ") else None
    code = text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else None
    return status, code


class Watcher:
    """Notes when each of many sockets is closed by the server (EOF or reset)."""

    def __init__(self):
        self.sockets: dict[int, socket.socket] = {}
        self.started: dict[int, float] = {}
        self.closed: dict[int, float] = {}
        self.answers: dict[int, bytes] = {}

    def add(self, s: socket.socket, started: float):
        s.setblocking(False)
        self.sockets[s.fileno()] = s
        self.started[s.fileno()] = started

    def poll(self, timeout: float = 0.05):
        open_fds = [fd for fd in self.sockets if fd not in self.closed]
        if not open_fds:
            return
        poller = select.poll()
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        readable = [fd for fd, _ in poller.poll(timeout * 1000)]
        now = time.monotonic()
        for fd in readable:
            try:
                data = self.sockets[fd].recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed[fd] = now
            elif fd not in self.answers:
                self.answers[fd] = data

    def ages_at_close(self) -> list[float]:
        return sorted(self.closed[fd] - self.started[fd] for fd in self.closed)

    def close_all(self):
        for s in self.sockets.values():
            s.close()


def served_during(gw: h.Gateway, stop: threading.Event, results: list):
    """Normal traffic: PUT then GET of small objects, in a loop, until `stop`."""
    s3 = gw.client(connect_timeout=3, read_timeout=5)
    for i in itertools.count():
        if stop.is_set():
            return
        started = time.monotonic()
        try:
            s3.put_object(Bucket="data", Key=f"normal/{i}", Body=b"x" * 1024)
            body = s3.get_object(Bucket="data", Key=f"normal/{i}")["Body"].read()
            results.append((body == b"x" * 1024, time.monotonic() - started))
        except Exception as e:  # noqa: BLE001 - a failure is what the test counts
            results.append((False, repr(e)))
        time.sleep(0.05)


def test_idle_slow_header_and_stalled_body_connections_are_closed_in_time_while_others_are_served(gateways):
    gw = gateways(server=server_timeouts())
    idle, slow_headers, stalled = Watcher(), Watcher(), Watcher()
    stop, results = threading.Event(), []
    traffic = threading.Thread(target=served_during, args=(gw, stop, results))
    traffic.start()
    try:
        # 100 connections that send nothing.
        for _ in range(100):
            s = connect(gw)
            idle.add(s, time.monotonic())
        # 100 connections whose headers come one byte every 300 ms (slowloris).
        drip = head_bytes("GET", "/data/k", {"Host": f"{h.HOST}:{gw.port}", "x-pad": "p" * 200})
        drips = []
        for _ in range(100):
            s = connect(gw)
            s.send(drip[:1])
            slow_headers.add(s, time.monotonic())
            drips.append(s)
        # 50 valid uploads that announce 64 KiB and stop after 1 KiB.
        body = os.urandom(65536)
        for i in range(50):
            s = connect(gw)
            s.sendall(head_bytes("PUT", f"/data/stalled/{i}", signed_headers(gw, "PUT", f"/data/stalled/{i}", body)))
            s.sendall(body[:1024])
            stalled.add(s, time.monotonic())
        deadline = time.monotonic() + max(HEADER, READ) + 2 * SLACK + 1
        sent = 1
        next_drip = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            for w in (idle, slow_headers, stalled):
                w.poll(0.02)
            if time.monotonic() >= next_drip and sent < len(drip):
                for s in drips:
                    if s.fileno() not in slow_headers.closed:
                        try:
                            s.send(drip[sent : sent + 1])
                        except OSError:
                            pass
                sent += 1
                next_drip += 0.3
    finally:
        stop.set()
        traffic.join(30)
    try:
        report = {
            "idle": idle.ages_at_close(),
            "slow headers": slow_headers.ages_at_close(),
            "stalled bodies": stalled.ages_at_close(),
        }
        for name, ages in report.items():
            print(f"{name}: {len(ages)} closed, after {ages[0]:.2f}..{ages[-1]:.2f} s" if ages else f"{name}: none closed")
        answers = sorted({str(status_and_code(a)) for a in stalled.answers.values()})
        print(f"stalled bodies were answered: {answers or 'nothing'}")
        ok = [r for r in results if r[0]]
        latencies = sorted(r[1] for r in ok)
        print(
            f"normal PUT+GET pairs during the attack: {len(ok)} of {len(results)} succeeded, "
            f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        )
        assert len(idle.closed) == 100, report["idle"]
        assert len(slow_headers.closed) == 100, report["slow headers"]
        assert len(stalled.closed) == 50, report["stalled bodies"]
        # Closed within the timeout (counted from the accept, the first header byte, the
        # last body byte), not before it.
        assert all(HEADER - 0.2 <= a <= HEADER + SLACK for a in report["idle"]), report["idle"]
        assert all(HEADER - 0.2 <= a <= HEADER + SLACK for a in report["slow headers"]), report["slow headers"]
        assert all(READ - 0.2 <= a <= READ + SLACK for a in report["stalled bodies"]), report["stalled bodies"]
        assert results and len(ok) == len(results), [r for r in results if not r[0]][:3]
    finally:
        for w in (idle, slow_headers, stalled):
            w.close_all()


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(gateways):
    gw = gateways(server=server_timeouts())
    s = connect(gw)
    s.sendall(head_bytes("GET", "/health", {"Host": f"{h.HOST}:{gw.port}"}))
    s.settimeout(5)
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    answered = time.monotonic()
    assert read_response(s, IDLE + 5) == b""
    took = time.monotonic() - answered
    print(f"kept-alive idle connection closed after {took:.2f} s (idle_timeout {IDLE} s)")
    assert IDLE - 0.2 <= took <= IDLE + SLACK


def test_a_client_that_does_not_read_its_response_is_dropped_after_the_write_timeout(gateways):
    gw = gateways(server=server_timeouts())
    size = 24 << 20
    data = os.urandom(size)
    gw.client().put_object(Bucket="data", Key="big", Body=data)
    # A small receive buffer, so the response backs up into the gateway quickly.
    s = connect(gw, rcvbuf=65536)
    s.sendall(head_bytes("GET", "/data/big", signed_headers(gw, "GET", "/data/big", b"")))
    started = time.monotonic()
    time.sleep(WRITE + SLACK + 1)
    # Had the gateway kept the connection, draining now would bring the whole object.
    received = read_response(s, 10)
    s.close()
    print(f"unread GET of {size >> 20} MiB: {len(received)} bytes received before the close "
          f"(write_timeout {WRITE} s, drained after {time.monotonic() - started:.1f} s)")
    assert received.startswith(b"HTTP/1.1 200")
    assert len(received) < size


def busy_upload(gw: h.Gateway, key: str) -> socket.socket:
    """A connection with a request in flight: an upload that announced 64 KiB and sent 1 KiB."""
    body = os.urandom(65536)
    s = connect(gw)
    s.sendall(head_bytes("PUT", f"/data/{key}", signed_headers(gw, "PUT", f"/data/{key}", body)))
    s.sendall(body[:1024])
    return s


def test_at_the_connection_cap_idle_connections_make_room_and_busy_ones_get_slow_down(gateways):
    gw = gateways(server=server_timeouts(max_connections=8, read_timeout="20s", read_header_timeout="20s", idle_timeout="20s"))
    s3 = gw.client(connect_timeout=3, read_timeout=5)
    # Twenty idle connections over a cap of eight: each newcomer closes the longest idle.
    idle = [connect(gw) for _ in range(20)]
    started = time.monotonic()
    s3.put_object(Bucket="data", Key="k", Body=b"v")
    assert s3.get_object(Bucket="data", Key="k")["Body"].read() == b"v"
    print(f"cap 8, 20 idle connections: a PUT+GET took {(time.monotonic() - started) * 1000:.0f} ms")
    for s in idle:
        s.close()
    time.sleep(0.3)
    # Eight connections busy with a request each: a ninth is answered 503 SlowDown at once.
    busy = [busy_upload(gw, f"busy/{i}") for i in range(8)]
    time.sleep(0.5)
    try:
        s = connect(gw)
        started = time.monotonic()
        s.sendall(head_bytes("GET", "/data/k", signed_headers(gw, "GET", "/data/k", b"")))
        raw = read_response(s, 5)
        took = time.monotonic() - started
        s.close()
        print(f"cap 8, all busy: answered {status_and_code(raw)} in {took * 1000:.0f} ms")
        assert status_and_code(raw) == (503, "SlowDown"), raw[:300]
        assert b"x-amz-request-id" in raw.lower()
        assert took < 1
    finally:
        for s in busy:
            s.close()
    h.wait_until("a request served again", lambda: s3.get_object(Bucket="data", Key="k")["Body"].read() == b"v", 10)


def test_with_1024_open_files_and_1100_idle_connections_a_request_is_served_within_a_second(gateways):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.fail(f"this test opens 1,100 sockets and needs an open-files hard limit >= 4096 (have {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    limit = ["sh", "-c", 'ulimit -n 1024 && exec "$@"', "sh"]
    gw = gateways(command_prefix=limit, server=server_timeouts(read_header_timeout="60s", idle_timeout="60s"))
    limits = open(f"/proc/{gw.proc.pid}/limits").read()
    assert any(line.startswith("Max open files") and "1024" in line for line in limits.splitlines()), limits
    s3 = gw.client(connect_timeout=3, read_timeout=5)
    s3.put_object(Bucket="data", Key="k", Body=b"v")
    sockets = []
    try:
        for _ in range(1100):
            s = socket.socket()
            s.settimeout(5)
            s.connect((h.HOST, gw.port))
            sockets.append(s)
        time.sleep(0.5)
        started = time.monotonic()
        assert s3.get_object(Bucket="data", Key="k")["Body"].read() == b"v"
        took = time.monotonic() - started
        poller = select.poll()
        for s in sockets:
            poller.register(s, select.POLLIN)
        # Readable means closed: these sockets were sent nothing.
        open_now = len(sockets) - len(poller.poll(0))
        print(f"ulimit -n 1024, 1,100 idle connections: GET in {took * 1000:.0f} ms; "
              f"{open_now} of them still open (the rest closed to make room)")
        assert took < 1
    finally:
        for s in sockets:
            s.close()
    log = gw.proc.output()
    spins = log.count("accept failed")
    print(f"'accept failed' log lines: {spins}")
    assert spins <= 5, "accept errors must back off, not spin"


def test_the_open_files_soft_limit_is_raised_to_the_hard_limit(gateways):
    gw = gateways(command_prefix=["sh", "-c", 'ulimit -Sn 1024 && ulimit -Hn 4096 && exec "$@"', "sh"])
    line = next(l for l in open(f"/proc/{gw.proc.pid}/limits").read().splitlines() if l.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"], line


def test_incomplete_body_is_answered_400_incomplete_body_and_stores_nothing(gateways):
    gw = gateways()
    body = os.urandom(4096)
    s = connect(gw)
    s.sendall(head_bytes("PUT", "/data/short", signed_headers(gw, "PUT", "/data/short", body)))
    s.sendall(body[:1000])
    s.shutdown(socket.SHUT_WR)
    raw = read_response(s, 10)
    s.close()
    assert status_and_code(raw) == (400, "IncompleteBody"), raw[:400]
    backend = gw.backends[0]
    assert not backend.has(gw.vbucket("data").real_key("short"))


@pytest.fixture
def stoppable_moto(make_moto):
    m = make_moto("hung")
    yield m
    m.proc.signal(signal.SIGCONT)


def test_a_stopped_backend_fails_requests_within_the_backend_timeouts(gateways, stoppable_moto):
    first_byte, stall = 2.0, 2.0
    gw = gateways(
        moto=stoppable_moto,
        backend_client={"connect_timeout": "1s", "first_byte_timeout": f"{first_byte}s", "stall_timeout": f"{stall}s"},
    )
    s3 = gw.client()
    s3.put_object(Bucket="data", Key="before", Body=b"v")

    def timed(method, path, data=b""):
        started = time.monotonic()
        try:
            r = h.signed_request(method, f"{gw.endpoint}{path}", data=data, timeout=30)
            outcome = (r.status_code, h.error_code(r))
        except Exception as e:  # noqa: BLE001 - the gateway may close while a large body is sent
            outcome = (None, type(e).__name__)
        return outcome, time.monotonic() - started

    stoppable_moto.proc.signal(signal.SIGSTOP)
    try:
        small = timed("PUT", "/data/small", b"x" * 1024)
        get = timed("GET", "/data/before")
        large = timed("PUT", "/data/large", os.urandom(32 << 20))
    finally:
        stoppable_moto.proc.signal(signal.SIGCONT)
    print(f"backend SIGSTOPped (first_byte_timeout {first_byte} s, stall_timeout {stall} s): "
          f"small PUT {small}, GET {get}, 32 MiB PUT {large}")
    for (status, code), took in (small, get):
        assert status is not None and status >= 500, (status, code)
        assert took < first_byte + SLACK + 1, took
    (status, _), took = large
    assert status is None or status >= 500
    assert took < stall + first_byte + SLACK + 2, took
    h.wait_until("the backend serving again", lambda: s3.get_object(Bucket="data", Key="before")["Body"].read() == b"v", 15)


def _timed(call):
    started = time.monotonic()
    try:
        outcome = call()
    except Exception as e:  # noqa: BLE001 - recorded, asserted on below
        outcome = e
    return outcome, time.monotonic() - started


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _copies_on_both(vbucket: h.VBucket, prefix: str) -> set[str]:
    """Keys under `prefix` that more than one backend of `vbucket` holds."""
    seen: dict[str, int] = {}
    strip = len(vbucket.real_key(""))
    for b in vbucket.backends:
        for k in b.keys(vbucket.real_key(prefix)):
            seen[k[strip:]] = seen.get(k[strip:], 0) + 1
    return {k for k, n in seen.items() if n > 1}


def test_with_one_of_two_backends_stopped_writes_move_reads_of_the_other_stay_fast_and_listings_answer(
    logs, moto1, stoppable_moto
):
    """Issue 11's proof for a pool: one backend SIGSTOPped, the other serving. Reads of keys
    on the serving backend never wait for the hung one; new objects placed on the hung one
    move to the next backend within the backend timeouts, and once the circuit breaker has
    seen `circuit_failures` failures nobody waits at all; a listing (which needs every
    backend) answers 503 within one probe timeout instead of hanging. Health probes are left
    at 60 s so that only the request path can notice the hung backend."""
    probe, first_byte, stall = 1.0, 2.0, 2.0
    tag = f"hostile{next(_tag)}"
    hung = h.Backend("hung", stoppable_moto, f"{tag}-hung")
    live = h.Backend("live", moto1, f"{tag}-live")
    for b in (hung, live):
        b.moto.create_bucket(b.bucket)
    gw = h.Gateway(
        logs / f"gateway-{tag}",
        [hung, live],
        [h.VBucket("data", [hung, live])],
        {
            "health_check_period": "60s",
            "probe_timeout": f"{probe}s",
            "backend_client": {
                "connect_timeout": "1s",
                "first_byte_timeout": f"{first_byte}s",
                "stall_timeout": f"{stall}s",
            },
        },
    )
    gw.start()
    passed = False
    try:
        s3 = gw.client()
        for i in range(20):
            s3.put_object(Bucket="data", Key=f"before/{i:02}", Body=f"v{i}".encode())
        placed = gw.vbucket("data").placements("before/")
        on_live = sorted(k for k, b in placed.items() if b == "live")
        assert 0 < len(on_live) < 20, placed

        written = {f"during/{i:02}": os.urandom(1024) for i in range(24)}
        stoppable_moto.proc.signal(signal.SIGSTOP)
        try:
            reads = [_timed(lambda k=k: s3.get_object(Bucket="data", Key=k)["Body"].read()) for k in on_live * 3]
            puts = [_timed(lambda k=k, v=v: s3.put_object(Bucket="data", Key=k, Body=v)) for k, v in written.items()]
            listings = [_timed(lambda: h.signed_request("GET", f"{gw.endpoint}/data?list-type=2", timeout=30)) for _ in range(3)]
        finally:
            stoppable_moto.proc.signal(signal.SIGCONT)

        read_times = [t for _, t in reads]
        put_times = [t for _, t in puts]
        print(
            f"\none of two backends SIGSTOPped (probe_timeout {probe} s, first_byte_timeout {first_byte} s): "
            f"{len(reads)} GETs of keys on the other backend p50 {_quantile(read_times, 0.5) * 1000:.1f} ms, "
            f"p99 {_quantile(read_times, 0.99) * 1000:.1f} ms, max {max(read_times) * 1000:.1f} ms; "
            f"{len(puts)} new 1 KiB PUTs p50 {_quantile(put_times, 0.5) * 1000:.1f} ms, "
            f"p99 {_quantile(put_times, 0.99) * 1000:.1f} ms, {sum(t > probe for t in put_times)} over {probe} s; "
            f"listings {[(r.status_code if hasattr(r, 'status_code') else type(r).__name__, round(t, 2)) for r, t in listings]}"
        )
        for body, took in reads:
            assert not isinstance(body, Exception), body
            # A read that waited for the hung backend would take at least the probe timeout.
            assert took < probe / 2, took
        # Under 100 ms as the issue asks (p90: one scheduling hiccup on 2 shared cores is not
        # a wait for the hung backend).
        assert _quantile(read_times, 0.9) < 0.1, read_times
        for (k, (answer, took)) in zip(written, puts):
            assert not isinstance(answer, Exception), (k, answer)
            assert took < probe + first_byte + SLACK, (k, took)
        # The breaker opens after three failed attempts; every later PUT skips the hung backend.
        assert sum(t > probe for t in put_times) <= 3, put_times
        for response, took in listings:
            assert hasattr(response, "status_code"), response
            assert response.status_code == 503 and h.error_code(response) == "ServiceUnavailable", response.text
            assert took < probe + SLACK, took
        # Every acknowledged write reads back whole.
        for k, v in written.items():
            assert s3.get_object(Bucket="data", Key=k)["Body"].read() == v
        # A PUT that timed out on the hung backend was sent whole: the backend stores it when
        # it resumes, after the same bytes were acknowledged from the other one. The failed
        # attempt was recorded, and the maintenance task (every 10 s) leaves one copy.
        late = _copies_on_both(gw.vbucket("data"), "during/")
        print(f"writes that landed late on the resumed backend: {len(late)} {sorted(late)}")
        h.wait_until("one copy of every key", lambda: not _copies_on_both(gw.vbucket("data"), "during/"), 60, 1)
        assert set(gw.vbucket("data").placements("during/")) == set(written)
        for k, v in written.items():
            assert s3.get_object(Bucket="data", Key=k)["Body"].read() == v
        passed = True
    finally:
        if not passed and gw.proc:
            print(f"\n--- last lines of {gw.proc.log_path} ---\n{gw.proc.tail(60)}")
        gw.stop()
