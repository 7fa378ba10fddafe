"""The integrity drill (tests/drill.py) against the Worker under `wrangler dev`: Workers KV as
the index, with KV's lag played by dropping and misdirecting index entries while the clients go
on, and one provider stopped for 5 s. Nothing lost, stale or resurrected; no key held twice
once the cron has settled what the outage left."""

import random
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import start_gateway, stop_gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import drill  # noqa: E402

PREFIX = f"{drill.BUCKET}/"


@pytest.mark.timeout(600)
def test_worker_drill_with_kv_lag_and_an_outage(bundle, motos, tmp_path):
    gw = start_gateway(bundle, motos, tmp_path, extra_bucket=drill.BUCKET)
    try:
        names = list(motos)
        clients, per_client_keys = 8, 20
        keys = [f"c{c:02d}/k{k:03d}" for c in range(clients) for k in range(per_client_keys)]
        lag_until = [0.0]
        touched = {"dropped": 0, "misdirected": 0}

        def kv_lag():
            # For 8 s: drop or misdirect the entries of random keys, as a KV replica that has
            # not seen recent writes would answer.
            rnd = random.Random(7)
            lag_until[0] = time.monotonic() + 8
            while time.monotonic() < lag_until[0]:
                key = rnd.choice(keys)
                params = {"bucket": drill.BUCKET, "key": key}
                if rnd.random() < 0.5:
                    requests.delete(f"{gw.url}/__test/index", params=params, timeout=10)
                    touched["dropped"] += 1
                else:
                    requests.put(f"{gw.url}/__test/index", params={**params, "backend": rnd.choice(names)}, timeout=10)
                    touched["misdirected"] += 1
                time.sleep(0.02)

        def outage():
            victim = motos[names[1]]
            victim.stop()
            time.sleep(5)
            victim.resume()

        def settle():
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                requests.get(f"{gw.url}/__scheduled", params={"cron": "*/5 * * * *"}, timeout=60)
                seen, twice = set(), 0
                for m in motos.values():
                    for k in m.keys():
                        if k.startswith(PREFIX):
                            twice += k in seen
                            seen.add(k)
                if not twice:
                    return
                time.sleep(1)

        target = drill.Target(
            client=lambda: gw.client(read_timeout=30, connect_timeout=3),
            backends={m.name: (lambda m=m: [k for k in m.keys() if k.startswith(PREFIX)]) for m in motos.values()},
            real_key=lambda k: PREFIX + k,
            faults=[(0.25, "KV lag", kv_lag), (0.5, "stop a provider", outage)],
            settle=settle,
        )
        result = drill.run(target, clients=clients, operations=800, keys_per_client=per_client_keys, max_size=64 * 1024)
        print(result.line(), touched)
        assert result.ok(), "\n".join([result.line(), *result.problems, gw.log_text()[-3000:]])
        assert touched["dropped"] > 10 and touched["misdirected"] > 10, touched
        assert result.acked > 300, result.line()
    finally:
        stop_gateway(gw)
