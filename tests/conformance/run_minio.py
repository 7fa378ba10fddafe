"""Runs MinIO's functional tests (minio-py's `tests/functional/tests.py`, from the `minio`
source distribution on PyPI) one test at a time, recording every result.

The suite's own `main()` stops at the first failing test (it raises `TestFailed`). This driver
loads tests.py as a module, replaces its `_call_test` with a wrapper that calls the original
(so PASS / FAIL / NA are the suite's own verdicts: NA is an S3 `NotImplemented` answer), keeps
going after a failure, bounds each test with an alarm and the whole run with a budget, and
writes one JSON line per test to --out. Then it runs the suite's `main()` unchanged, with
`MINT_MODE=full` (every test the suite has).

    SERVER_ENDPOINT=127.0.0.1:8080 ACCESS_KEY=... SECRET_KEY=... ENABLE_HTTPS=0 \
        python3 run_minio.py --tests-py .../tests/functional/tests.py --out results.jsonl

Run it in an empty directory: the suite writes its 1 MB and 11 MB data files there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import signal
import sys
import time


class TestTimeout(Exception):
    """Raised in a test by the alarm; the suite records it as a FAIL with this message."""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests-py", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-test-timeout", type=int, default=60)
    ap.add_argument("--budget", type=float, default=240, help="seconds for the whole run")
    args = ap.parse_args()

    os.environ["MINT_MODE"] = "full"
    spec = importlib.util.spec_from_file_location("minio_functional_tests", args.tests_py)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)

    original = suite._call_test
    deadline = time.monotonic() + args.budget
    out = open(args.out, "w")

    def on_alarm(signum, frame):
        raise TestTimeout(f"timed out after {args.per_test_timeout}s (driver limit)")

    signal.signal(signal.SIGALRM, on_alarm)

    def call_test(func, *a, **kw):
        name = func.__name__
        record = {"name": name}
        if time.monotonic() > deadline:
            record.update(status="NOT_RUN", message=f"run budget of {args.budget:.0f}s spent")
        else:
            buf = io.StringIO()
            start = time.monotonic()
            signal.alarm(args.per_test_timeout)
            try:
                with contextlib.redirect_stdout(buf):
                    original(func, *a, **kw)
            except suite.TestFailed:
                pass
            except TestTimeout as e:  # fired outside the suite's own try (in its logging)
                record.update(status="FAIL", message=str(e))
            finally:
                signal.alarm(0)
            record["seconds"] = round(time.monotonic() - start, 2)
            lines = [line for line in buf.getvalue().splitlines() if line.startswith("{")]
            if "status" not in record:
                try:
                    entry = json.loads(lines[-1])
                    record["status"] = entry.get("status", "FAIL")
                    if entry.get("message") or entry.get("alert"):
                        record["message"] = entry.get("message") or entry.get("alert")
                    if entry.get("function"):
                        record["function"] = entry["function"]
                    if entry.get("error"):
                        record["error"] = entry["error"][-1500:]
                except (IndexError, ValueError):
                    record.update(status="FAIL", message="the suite printed no result line")
        out.write(json.dumps(record) + "\n")
        out.flush()
        print(f"{record['status']:8} {name} {record.get('message', '')[:200]}", flush=True)

    suite._call_test = call_test
    try:
        suite.main()
    finally:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
