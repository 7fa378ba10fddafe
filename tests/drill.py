"""The integrity drill: many clients, mixed operations, and faults, checked against a model.

Clients each own a slice of the key space, so the model of every key is exact (no two clients
race on one key; the gateway's own races, between requests, reindex and maintenance, are what
is tested). Every answer is checked as it arrives:

- a PUT or DELETE that is acknowledged sets the key's value (or its absence);
- one that fails without saying whether it landed (5xx, a dropped connection while the gateway
  restarts) leaves a *pending* value: it may take effect at any later time, as on S3 itself,
  until an acknowledged write or delete supersedes it;
- a GET must return the current value or a pending one: anything else is `lost` (404 for a key
  that holds a value), `stale` (an older value of the key) or `resurrected` (a value of a key
  whose delete was acknowledged).

Faults are the caller's (`Target.faults`): a backend stopped for a while, the gateway killed
and restarted, the index deleted and rebuilt by `reindex` while clients go on. At the end,
with everything up again, every key is read and checked, the backends are listed directly for
keys held twice, and the gateway's listing must equal the keys that exist. `run` returns the
counts; the caller prints `Result.line()`.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import botocore.exceptions

BUCKET = "drill"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class KeyState:
    """What one key holds: `current` (a sha256, or None for absent) and `pending` values of
    operations that failed without saying whether they landed. `history` holds every value
    ever acknowledged, to tell a stale read from a corrupt one."""

    current: str | None = None
    pending: set = field(default_factory=set)
    history: list = field(default_factory=list)
    deleted: bool = False

    def readable(self) -> set:
        return {self.current} | self.pending


@dataclass
class Result:
    acked: int = 0
    operations: int = 0
    lost: int = 0
    stale: int = 0
    resurrected: int = 0
    corrupt: int = 0
    duplicates: int = 0
    listing_mismatch: int = 0
    unavailable: int = 0
    ambiguous: int = 0
    problems: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def ok(self) -> bool:
        return not (
            self.lost or self.stale or self.resurrected or self.corrupt or self.duplicates or self.listing_mismatch
        )

    def line(self) -> str:
        return (
            f"acked {self.acked}, lost {self.lost}, stale {self.stale}, resurrected {self.resurrected}, "
            f"duplicates {self.duplicates}"
            + (f", corrupt {self.corrupt}" if self.corrupt else "")
            + (f", listing mismatches {self.listing_mismatch}" if self.listing_mismatch else "")
            + f" ({self.operations} operations, {self.unavailable} answered 503 or dropped,"
            f" {self.ambiguous} left ambiguous)"
        )


@dataclass
class Target:
    """What the drill runs against.

    client(): a new boto3 client for the gateway (one per thread).
    backends: name -> callable listing the real keys of the drill bucket on that backend.
    real_key(key): the key as stored on a backend.
    faults: (at_fraction, name, action) run once the given fraction of operations is done;
    an action may block (a backend stopped for 10 s) and runs on its own thread.
    settle(): called after the run, before the final checks (e.g. wait for maintenance).
    """

    client: Callable[[], object]
    backends: dict
    real_key: Callable[[str], str]
    faults: list = field(default_factory=list)
    settle: Callable[[], None] | None = None
    bucket: str = BUCKET
    key_prefix: str = ""
    # Extra PutObject arguments (the Lambda emulator needs a Content-Type on binary bodies).
    put_args: dict = field(default_factory=dict)


class Model:
    def __init__(self, keys: list[str]):
        self.keys = {k: KeyState() for k in keys}
        self.lock = threading.Lock()
        self.result = Result()

    def problem(self, kind: str, message: str):
        with self.lock:
            setattr(self.result, kind, getattr(self.result, kind) + 1)
            if len(self.result.problems) < 50:
                self.result.problems.append(f"{kind}: {message}")

    def check_read(self, key: str, got: str | None, where: str):
        s = self.keys[key]
        if got in s.readable():
            s.current = got  # what may be read next: this, or a pending value landing later
            return
        if got is None:
            self.problem("lost", f"{where}: {key} is gone, expected {s.current}")
        elif s.deleted and s.current is None and got in s.history:
            self.problem("resurrected", f"{where}: {key} came back after its delete was acknowledged")
        elif got in s.history:
            self.problem("stale", f"{where}: {key} returned an older value")
        else:
            self.problem("corrupt", f"{where}: {key} returned bytes never written ({got[:12]})")


def is_unavailable(e: Exception) -> bool:
    if isinstance(e, botocore.exceptions.ClientError):
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500
    # Connection refused or reset, timeouts: the gateway restarting, a backend stalled.
    return isinstance(e, (botocore.exceptions.BotoCoreError, ConnectionError, OSError))


def error_code(e: Exception) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return e.response.get("Error", {}).get("Code", "")
    return type(e).__name__


def run(
    target: Target,
    *,
    clients: int = 32,
    operations: int = 10_000,
    keys_per_client: int = 40,
    max_size: int = 256 * 1024,
    seed: int = 1,
    deadline_s: float = 900,
    log: Callable[[str], None] = print,
) -> Result:
    keys = [f"{target.key_prefix}c{c:02d}/k{k:03d}" for c in range(clients) for k in range(keys_per_client)]
    bucket = target.bucket
    model = Model(keys)
    done = [0]
    done_lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s
    pending_faults = sorted(target.faults, key=lambda f: f[0])
    fault_threads: list[threading.Thread] = []
    started = time.monotonic()

    def progress():
        with done_lock:
            done[0] += 1
            n = done[0]
        while pending_faults and n >= pending_faults[0][0] * operations:
            at, name, action = pending_faults.pop(0)
            log(f"drill: {n} operations done, fault: {name}")
            t = threading.Thread(target=action, name=name, daemon=True)
            t.start()
            fault_threads.append(t)

    def client_loop(c: int):
        rnd = random.Random(seed * 1000 + c)
        s3 = target.client()
        mine = keys[c * keys_per_client : (c + 1) * keys_per_client]
        per_client = -(-operations // clients)  # at least `operations` in all
        for i in range(per_client):
            if time.monotonic() > stop_at:
                break
            key = rnd.choice(mine)
            roll = rnd.random()
            state = model.keys[key]
            try:
                if roll < 0.50:
                    size = rnd.choice([0, 1, 100, 4096, rnd.randint(0, max_size), rnd.randint(0, 16 * 1024)])
                    body = rnd.randbytes(size)
                    d = digest(body)
                    try:
                        s3.put_object(Bucket=bucket, Key=key, Body=body, **target.put_args)
                        state.current, state.pending, state.deleted = d, set(), False
                        state.history.append(d)
                        with model.lock:
                            model.result.acked += 1
                    except Exception as e:
                        if not is_unavailable(e):
                            model.problem("corrupt", f"PUT {key}: unexpected {error_code(e)}")
                        state.pending.add(d)
                        state.history.append(d)
                        with model.lock:
                            model.result.unavailable += 1
                elif roll < 0.75:
                    try:
                        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                        model.check_read(key, digest(body), f"GET #{i}")
                    except botocore.exceptions.ClientError as e:
                        if error_code(e) in ("NoSuchKey", "404"):
                            model.check_read(key, None, f"GET #{i}")
                        elif is_unavailable(e):
                            with model.lock:
                                model.result.unavailable += 1
                        else:
                            model.problem("corrupt", f"GET {key}: unexpected {error_code(e)}")
                    except Exception as e:
                        if not is_unavailable(e):
                            raise
                        with model.lock:
                            model.result.unavailable += 1
                elif roll < 0.87:
                    try:
                        s3.delete_object(Bucket=bucket, Key=key)
                        state.current, state.pending, state.deleted = None, set(), True
                        with model.lock:
                            model.result.acked += 1
                    except Exception as e:
                        if not is_unavailable(e):
                            model.problem("corrupt", f"DELETE {key}: unexpected {error_code(e)}")
                        state.pending.add(None)
                        with model.lock:
                            model.result.unavailable += 1
                elif roll < 0.94:
                    batch = rnd.sample(mine, rnd.randint(1, 5))
                    try:
                        out = s3.delete_objects(
                            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": False}
                        )
                        deleted = {d["Key"] for d in out.get("Deleted", [])}
                        for k in batch:
                            st = model.keys[k]
                            if k in deleted:
                                st.current, st.pending, st.deleted = None, set(), True
                                with model.lock:
                                    model.result.acked += 1
                            else:
                                st.pending.add(None)
                    except Exception as e:
                        if not is_unavailable(e):
                            model.problem("corrupt", f"DeleteObjects: unexpected {error_code(e)}")
                        for k in batch:
                            model.keys[k].pending.add(None)
                        with model.lock:
                            model.result.unavailable += 1
                else:
                    source = rnd.choice(mine)
                    if source == key:
                        continue
                    src = model.keys[source]
                    try:
                        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source})
                        # The copy read one of the source's readable values: only a later read
                        # of `key` tells which when there are several.
                        values = sorted(v for v in src.readable() if v is not None)
                        if not values:
                            model.problem("corrupt", f"COPY {source} -> {key}: copied a key that does not exist")
                            continue
                        state.current, state.pending = values[0], set(values[1:])
                        state.deleted = False
                        with model.lock:
                            model.result.acked += 1
                    except botocore.exceptions.ClientError as e:
                        if error_code(e) in ("NoSuchKey", "404"):
                            pass
                        elif is_unavailable(e):
                            state.pending |= {v for v in src.readable() if v is not None}
                            with model.lock:
                                model.result.unavailable += 1
                        else:
                            model.problem("corrupt", f"COPY {source} -> {key}: unexpected {error_code(e)}")
                    except Exception as e:
                        if not is_unavailable(e):
                            raise
                        state.pending |= {v for v in src.readable() if v is not None}
                        with model.lock:
                            model.result.unavailable += 1
            finally:
                progress()

    threads = [threading.Thread(target=client_loop, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, stop_at - time.monotonic()))
    for t in fault_threads:
        t.join(120)
    model.result.operations = done[0]
    model.result.timings["run_s"] = round(time.monotonic() - started, 1)
    log(f"drill: {done[0]} operations in {model.result.timings['run_s']} s; settling")

    if target.settle:
        target.settle()
    final_check(target, model, log)
    return model.result


def final_check(target: Target, model: Model, log: Callable[[str], None]):
    bucket = target.bucket
    s3 = target.client()
    exists: set[str] = set()
    for key, state in model.keys.items():
        got = None
        for attempt in range(5):
            try:
                got = digest(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                break
            except botocore.exceptions.ClientError as e:
                if error_code(e) in ("NoSuchKey", "404"):
                    got = None
                    break
                if attempt == 4:
                    raise
                time.sleep(1)
        if len(state.readable()) > 1:
            model.result.ambiguous += 1
        model.check_read(key, got, "final")
        if got is not None:
            exists.add(key)
    # The backends, listed directly: a key held twice is a duplicate.
    holders: dict[str, list[str]] = {}
    for name, list_keys in target.backends.items():
        for real in list_keys():
            holders.setdefault(real, []).append(name)
    for real, names in holders.items():
        if len(names) > 1:
            model.problem("duplicates", f"{real} is on {names}")
    # The gateway's listing equals what exists.
    listed: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=target.key_prefix):
        listed.update(o["Key"] for o in page.get("Contents", []))
    for key in listed ^ exists:
        model.problem("listing_mismatch", f"{key}: listed {key in listed}, readable {key in exists}")
    log(f"drill: final check of {len(model.keys)} keys, {len(exists)} exist")


# ---------------------------------------------------------------------------------------------
# The drill against the self-hosted server: three providers, SQLite index.
# ---------------------------------------------------------------------------------------------


def against_server(
    log_dir,
    *,
    clients: int = 32,
    operations: int = 10_000,
    stop_for: float = 10.0,
    log: Callable[[str], None] = print,
) -> Result:
    """Three `moto_server` providers behind `s3-balance serve` (round-robin: consecutive writes
    visit every backend), with the faults of issue 10 on the way:

    - at 20 % of the operations one provider is SIGSTOPped for `stop_for` seconds;
    - at 45 % the gateway is SIGKILLed and started again;
    - at 65 % the gateway is SIGKILLed, its SQLite index deleted, the gateway started on an
      empty index, and `s3-balance reindex` run while the clients go on.
    """
    import harness as h

    motos = [h.Moto(f"drill-{i + 1}", log_dir, f"DRILL{i + 1}KEY", f"drill-{i + 1}-secret") for i in range(3)]
    gateway = None
    reindex_runs: list = []
    try:
        # Two of the three providers take overwrites with If-Match instead of a HEAD first
        # (`conditional_writes`), so both ways of confirming an indexed copy meet the faults.
        backends = [
            h.Backend(f"p{i + 1}", m, f"drill-real-{i + 1}", conditional_writes=i != 1)
            for i, m in enumerate(motos)
        ]
        for b in backends:
            b.moto.create_bucket(b.bucket)
        vbucket = h.VBucket(BUCKET, backends)
        gateway = h.Gateway(
            log_dir / "gateway-drill",
            backends,
            [vbucket],
            {"strategy": "round-robin", "probe_timeout": "2s", "fall": 2, "health_check_period": "2s"},
        )
        gateway.start()
        gw = gateway

        def stop_a_provider():
            victim = motos[1]
            victim.proc.signal(__import__("signal").SIGSTOP)
            time.sleep(stop_for)
            victim.proc.signal(__import__("signal").SIGCONT)
            log(f"drill: provider {victim.name} resumed after {stop_for} s")

        def kill_gateway():
            gw.proc.signal(__import__("signal").SIGKILL)
            gw.proc.popen.wait(10)
            gw.start()
            log("drill: gateway killed and started again")

        def lose_index_and_reindex():
            gw.proc.signal(__import__("signal").SIGKILL)
            gw.proc.popen.wait(10)
            gw.delete_metadata()
            gw.start()
            log("drill: index deleted, gateway serving on an empty index; reindex running")
            started = time.monotonic()
            r = gw.run_cli("reindex", timeout=600)
            reindex_runs.append((r, time.monotonic() - started))
            log(f"drill: reindex exited {r.returncode} after {time.monotonic() - started:.1f} s: {r.stdout.strip()[-300:]}")

        def settle():
            # Older copies left while a provider was stopped are settled by the gateway's
            # maintenance task (every 10 s): wait for the providers to hold each key once.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                seen: dict = {}
                twice = 0
                for b in backends:
                    for k in b.keys(f"{BUCKET}/"):
                        twice += k in seen
                        seen[k] = b.name
                if not twice:
                    return
                time.sleep(2)

        target = Target(
            client=lambda: h.s3_client(gw.endpoint, h.ADMIN_KEY, h.ADMIN_SECRET, read_timeout=30, connect_timeout=3),
            backends={b.name: (lambda b=b: b.keys(f"{BUCKET}/")) for b in backends},
            real_key=vbucket.real_key,
            faults=[(0.20, "stop a provider", stop_a_provider), (0.45, "kill the gateway", kill_gateway),
                    (0.65, "lose the index, reindex while serving", lose_index_and_reindex)],
            settle=settle,
        )
        result = run(target, clients=clients, operations=operations, log=log)
        for r, took in reindex_runs:
            result.timings["reindex_s"] = round(took, 1)
            if r.returncode != 0:
                result.problems.append(f"reindex exited {r.returncode}: {r.stderr[-500:]}")
        return result
    finally:
        if gateway is not None:
            gateway.stop()
        for m in motos:
            m.stop()
