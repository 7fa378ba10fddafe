"""Starts two moto backends and the Worker under `wrangler dev` (as the tests do) and waits:
for trying the Worker by hand and for `scripts/worker-size --cpu`.
Usage: python tests/worker/serve.py  (prints WORKER_URL; Ctrl-C stops everything)."""

import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import conftest  # noqa: E402


class _Factory:
    def mktemp(self, name):
        return Path(tempfile.mkdtemp(prefix=f"worker-{name}-"))


def main():
    if conftest.tools_missing():
        sys.exit(conftest.tools_missing())
    # SIGTERM stops everything too (the default handler would skip the clean-up).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    factory = _Factory()
    motos_gen = conftest.motos.__wrapped__(factory)
    motos = next(motos_gen)
    gw = conftest.start_gateway(conftest.SHIM, motos, factory.mktemp("gateway"))
    print(f"WORKER_URL={gw.url}\nlog: {gw.log}\naccess key {conftest.ACCESS_KEY} secret {conftest.SECRET_KEY}", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        conftest.stop_gateway(gw)
        next(motos_gen, None)


if __name__ == "__main__":
    main()
