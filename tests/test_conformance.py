"""Public S3 conformance suites the project does not write (issue 17), run against the gateway
and, for comparison, against its backend (`moto_server`) alone:

- `s3s-e2e` (crates.io, the s3s project's end-to-end suite; the AWS SDK for Rust), version
  S3S_E2E_VERSION, installed by scripts/install-test-deps into the tools dir;
- MinIO's functional tests (`tests/functional/tests.py` of the `minio` source distribution on
  PyPI, the mint suite's minio-py part), version MINIO_VERSION, every test of its full mode,
  run one at a time by tests/conformance/run_minio.py.

The gateway is the server binary, path style, over two real buckets on two fresh
`moto_server` providers, with `s3api.allow_create_bucket: true` (both suites create buckets).
Per-test results go to `<pytest tmp>/e2e0/conformance/<suite>.json` and a table is printed at
the end of the run. A test fails when the gateway stops passing a test named in
tests/conformance/expected-<suite>.txt (what it passes today), or when it fails a test that
the backend alone passes and that is not listed, with its reason, in
tests/conformance/known-gaps-<suite>.txt. The pass counts are in the README (Conformance)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import harness as h

S3S_E2E_VERSION = "0.14.1"
MINIO_VERSION = "7.2.20"
HERE = Path(__file__).resolve().parent / "conformance"
TOOLS = Path(os.environ.get("S3_BALANCE_TOOLS", "/var/tmp/s3-balance-tools"))

# Bounds: each target's run of a suite, so both suites together stay within ~5 minutes of CI.
S3S_E2E_RUN_TIMEOUT = 120  # the whole suite in one process (it has no per-case limit)
S3S_E2E_CASE_TIMEOUT = 30  # per case, when the whole run timed out and cases run one by one
MINIO_BUDGET = 180  # tests not started within this many seconds are recorded NOT_RUN
MINIO_PER_TEST_TIMEOUT = 90  # test_list_objects_with_1001_files writes 2,000 objects


# ---------------------------------------------------------------------------------------------
# The tools
# ---------------------------------------------------------------------------------------------


def s3s_e2e_binary() -> str:
    found = shutil.which("s3s-e2e")
    if not found and (TOOLS / "bin" / "s3s-e2e").exists():
        found = str(TOOLS / "bin" / "s3s-e2e")
    if not found:
        h.missing("s3s-e2e not installed (scripts/install-test-deps installs it into the tools dir)")
    version = subprocess.run([found, "-V"], capture_output=True, text=True, timeout=10).stdout.split()
    if version[-1:] != [S3S_E2E_VERSION]:
        h.missing(f"s3s-e2e {S3S_E2E_VERSION} wanted, {found} is {' '.join(version)}")
    return found


def minio_tests_py() -> Path:
    path = TOOLS / f"minio-py-{MINIO_VERSION}" / "tests" / "functional" / "tests.py"
    if not path.exists():
        h.missing(f"MinIO functional tests not at {path} (scripts/install-test-deps extracts them)")
    try:
        import minio  # noqa: PLC0415 - the library the suite drives (tests/requirements.txt)
    except ImportError:
        h.missing("python package minio not installed (tests/requirements.txt)")
    if minio.__version__ != MINIO_VERSION:
        h.missing(f"python package minio {MINIO_VERSION} wanted, found {minio.__version__}")
    return path


# ---------------------------------------------------------------------------------------------
# Targets and results
# ---------------------------------------------------------------------------------------------


class Target:
    """Where a suite runs: an S3 endpoint with credentials."""

    def __init__(self, name: str, endpoint: str, key: str, secret: str):
        self.name, self.endpoint, self.key, self.secret = name, endpoint, key, secret


def targets(make_gateway, make_moto) -> tuple[Target, Target]:
    """The gateway over two fresh providers, and a fresh provider alone."""
    gw = make_gateway(n=2, providers=[make_moto("confa"), make_moto("confb")], allow_create_bucket=True)
    alone = make_moto("confalone")
    return (
        Target("gateway", gw.endpoint, h.ADMIN_KEY, h.ADMIN_SECRET),
        Target("moto", alone.endpoint, alone.access_key, alone.secret_key),
    )


def read_list(name: str) -> dict[str, str]:
    """A checked-in list: one test name a line, optionally `name  # reason`; '#' lines are
    comments."""
    out = {}
    for line in (HERE / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test, _, reason = line.partition("#")
        out[test.strip()] = reason.strip()
    return out


def one_line(text: str, limit: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def judge(suite: str, version: str, results: dict[str, dict[str, dict]], logs: Path):
    """results: target name -> test name -> {"status": PASS|FAIL|NA|NOT_RUN|..., "reason"}.
    Writes them, prints (and keeps for the end of the run) the table, then asserts."""
    out_dir = logs / "conformance"
    out_dir.mkdir(exist_ok=True)
    record = {"suite": suite, "version": version, "results": results}
    (out_dir / f"{suite}.json").write_text(json.dumps(record, indent=1))

    gw, alone = results["gateway"], results["moto"]
    names = sorted(set(gw) | set(alone))
    passed = {t: sorted(n for n, r in results[t].items() if r["status"] == "PASS") for t in results}
    width = max(len(n) for n in names)
    lines = [
        f"{suite} {version}: gateway passes {len(passed['gateway'])}/{len(gw)}, "
        f"moto_server alone {len(passed['moto'])}/{len(alone)}",
        f"  {'test':{width}}  {'gateway':8} {'moto':8} why it fails (the gateway, else moto)",
    ]
    for n in names:
        g = gw.get(n, {"status": "ABSENT"})
        m = alone.get(n, {"status": "ABSENT"})
        if g["status"] != "PASS":
            reason = one_line(g.get("reason", ""), 110)
        elif m["status"] != "PASS":
            reason = "moto: " + one_line(m.get("reason", ""), 104)
        else:
            reason = ""
        lines.append(f"  {n:{width}}  {g['status']:8} {m['status']:8} {reason}")
    table = "\n".join(lines)
    print("\n" + table)
    h.SUMMARIES.append(table)

    expected = read_list(f"expected-{suite}.txt")
    known_gaps = read_list(f"known-gaps-{suite}.txt")
    not_implemented = {n for n, why in known_gaps.items() if why.startswith("not implemented")}
    both = set(expected) & set(known_gaps)
    assert not both, f"{suite}: listed both as passing and as a known gap: {both}"
    for n in known_gaps:
        if gw.get(n, {}).get("status") == "PASS":
            note = (
                f"{suite}: {n}, a known gap ({known_gaps[n]}), passed on the gateway in this run; "
                f"once it passes for good, move it from known-gaps-{suite}.txt to expected-{suite}.txt"
            )
            print(note)
            h.SUMMARIES.append(note)
    regressed = [
        f"{n}: {gw.get(n, {}).get('status', 'ABSENT')} {one_line(gw.get(n, {}).get('reason', ''))}"
        for n in expected
        if gw.get(n, {}).get("status") != "PASS"
    ]
    assert not regressed, (
        f"{suite}: the gateway no longer passes (tests/conformance/expected-{suite}.txt):\n" + "\n".join(regressed)
    )

    # The backend passes it, the gateway does not, and no known gap says why.
    behind = [
        f"{n}: {one_line(gw.get(n, {}).get('reason', ''))}"
        for n in passed["moto"]
        if gw.get(n, {}).get("status") != "PASS" and n not in known_gaps
    ]
    assert not behind, (
        f"{suite}: the gateway fails tests that moto_server alone passes, not listed in "
        f"tests/conformance/known-gaps-{suite}.txt:\n" + "\n".join(behind)
    )
    # Over the tests of what the gateway implements (the known gaps marked "not implemented"
    # set aside; its known bugs count against it), it passes at least as many as the backend.
    implemented = [n for n in names if n not in not_implemented]
    g_impl = sum(gw.get(n, {}).get("status") == "PASS" for n in implemented)
    m_impl = sum(alone.get(n, {}).get("status") == "PASS" for n in implemented)
    line = (
        f"{suite}: over the {len(implemented)} tests of implemented operations: "
        f"gateway {g_impl}, moto alone {m_impl}"
    )
    print(line)
    h.SUMMARIES.append(line)
    assert g_impl >= m_impl, line


# ---------------------------------------------------------------------------------------------
# s3s-e2e
# ---------------------------------------------------------------------------------------------


def s3s_env(t: Target, home: Path) -> dict:
    env = h.aws_env(t.key, t.secret, home)
    env["AWS_ENDPOINT_URL"] = t.endpoint
    env["NO_COLOR"] = "1"
    env["RUST_BACKTRACE"] = "0"
    env.pop("RUST_LOG", None)  # errors only: the failing calls' errors go to the log
    return env


def s3s_cases(report: dict) -> dict[str, dict]:
    out = {}
    for suite in report["suites"]:
        suite_setup = suite.get("setup") or {}
        for fixture in suite["fixtures"]:
            fixture_setup = fixture.get("setup") or {}
            for case in fixture["cases"]:
                name = f"{suite['name']}/{fixture['name']}/{case['name']}"
                if case["ignored"]:
                    out[name] = {"status": "IGNORED"}
                    continue
                if case["passed"]:
                    out[name] = {"status": "PASS"}
                    continue
                run = case.get("run") or {}
                result = run.get("result")
                if isinstance(result, dict) and "Err" in result:
                    reason = result["Err"]
                elif result == "Panicked":
                    reason = "panicked (an assertion of the suite)"
                elif suite_setup.get("result") not in (None, "Ok"):
                    reason = f"suite setup failed: {suite_setup['result']}"
                elif fixture_setup.get("result") not in (None, "Ok"):
                    reason = f"fixture setup failed: {fixture_setup['result']}"
                else:
                    reason = "did not run"
                out[name] = {"status": "FAIL", "reason": reason}
    return out


def failure_reason(log_text: str) -> str | None:
    """What a failed case's own log says: the S3 error in the response body, else the panic
    message of the suite's assertion (with its left/right values)."""
    m = re.search(r"<Code>([^<]*)</Code>(?:<Message>([^<]*)</Message>)?", log_text)
    status = re.search(r"status: StatusCode\(\s*(\d{3})", log_text)
    if m:
        return f"{m.group(1)}{f' ({status.group(1)})' if status else ''}: {m.group(2) or ''}".strip()
    m = re.search(r"panicked at ([^\n]*)\n((?:(?!stack backtrace|note: )[^\n]*\n){1,3})", log_text)
    if m:
        where = m.group(1).rsplit("/", 1)[-1]
        return f"assertion at {where} " + " ".join(m.group(2).split())
    # An answer the SDK could not read (say, a wrong XML root element).
    m = re.search(r'XmlDecodeError \{\s*kind: Custom\(\s*"((?:[^"\\]|\\.)*)"', log_text)
    if m:
        return "unreadable response: " + m.group(1).replace('\\"', '"')
    return None


def run_s3s_e2e(binary: str, t: Target, work: Path) -> dict[str, dict]:
    work.mkdir(parents=True, exist_ok=True)
    env = s3s_env(t, work)
    report_path = work / "report.json"
    log = work / "s3s-e2e.log"
    listed = subprocess.run([binary, "--list"], capture_output=True, text=True, env=env, timeout=30, cwd=work)
    cases = [line for line in listed.stdout.split() if line.count("/") == 2]
    assert cases, f"s3s-e2e --list printed no case:\n{listed.stdout}\n{listed.stderr}"
    try:
        with open(log, "w") as f:
            subprocess.run(
                [binary, "--json", str(report_path)], stdout=f, stderr=subprocess.STDOUT, env=env,
                timeout=S3S_E2E_RUN_TIMEOUT, cwd=work,
            )
        results = s3s_cases(json.loads(report_path.read_text()))
    except subprocess.TimeoutExpired:
        # Something hung: one process per case, each bounded, so the others still count.
        results = {}
        for case in cases:
            one = work / (case.replace("/", "_") + ".json")
            try:
                with open(log, "a") as f:
                    f.write(f"\n=== {case}\n")
                    f.flush()
                    subprocess.run(
                        [binary, "--json", str(one), "--filter", f"^{re.escape(case)}$"], stdout=f,
                        stderr=subprocess.STDOUT, env=env, timeout=S3S_E2E_CASE_TIMEOUT, cwd=work,
                    )
                results.update(s3s_cases(json.loads(one.read_text())))
            except subprocess.TimeoutExpired:
                results[case] = {"status": "FAIL", "reason": f"timed out after {S3S_E2E_CASE_TIMEOUT}s"}
    for case in cases:
        results.setdefault(case, {"status": "FAIL", "reason": "absent from the report"})
    # The report says only "service error" or "panicked": each failed case runs once more on
    # its own, with its own log, to name the S3 error code or the assertion (the status stays
    # the first run's).
    for case, r in results.items():
        if r["status"] != "FAIL" or r["reason"].startswith("timed out"):
            continue
        one_log = work / (case.replace("/", "_") + ".log")
        try:
            with open(one_log, "w") as f:
                subprocess.run(
                    [binary, "--filter", f"^{re.escape(case)}$"], stdout=f, stderr=subprocess.STDOUT, env=env,
                    timeout=S3S_E2E_CASE_TIMEOUT, cwd=work,
                )
            r["reason"] = failure_reason(one_log.read_text(errors="replace")) or r["reason"]
        except subprocess.TimeoutExpired:
            pass
    return results


@pytest.mark.timeout(420)
def test_s3s_e2e(make_gateway, make_moto, logs):
    binary = s3s_e2e_binary()
    gateway, alone = targets(make_gateway, make_moto)
    results = {}
    for t in (alone, gateway):
        results[t.name] = run_s3s_e2e(binary, t, logs / "conformance" / f"s3s-e2e-{t.name}-{int(time.time())}")
    judge("s3s-e2e", S3S_E2E_VERSION, results, logs)


# ---------------------------------------------------------------------------------------------
# MinIO functional tests
# ---------------------------------------------------------------------------------------------


def run_minio(tests_py: Path, t: Target, work: Path) -> dict[str, dict]:
    work.mkdir(parents=True, exist_ok=True)
    out = work / "results.jsonl"
    env = dict(os.environ)
    env.update(
        SERVER_ENDPOINT=t.endpoint.removeprefix("http://"),
        ACCESS_KEY=t.key,
        SECRET_KEY=t.secret,
        ENABLE_HTTPS="0",
        DATA_DIR=str(work / "no-mint-data"),
    )
    with open(work / "run.log", "w") as f:
        try:
            subprocess.run(
                [h.python(), str(HERE / "run_minio.py"), "--tests-py", str(tests_py), "--out", str(out),
                 "--budget", str(MINIO_BUDGET), "--per-test-timeout", str(MINIO_PER_TEST_TIMEOUT)],
                stdout=f, stderr=subprocess.STDOUT, env=env, cwd=work,
                timeout=MINIO_BUDGET + MINIO_PER_TEST_TIMEOUT + 30,
            )
        except subprocess.TimeoutExpired:
            f.write("\n=== the driver timed out; the tests it had not finished are missing\n")
    results = {}
    for line in out.read_text().splitlines() if out.exists() else []:
        r = json.loads(line)
        reason = r.get("message", "")
        if r.get("function"):
            reason = f"{r['function']}: {reason}"
        results[r["name"]] = {"status": r["status"], "reason": reason}
    return results


@pytest.mark.timeout(720)
def test_minio_functional(make_gateway, make_moto, logs):
    tests_py = minio_tests_py()
    gateway, alone = targets(make_gateway, make_moto)
    results = {}
    for t in (alone, gateway):
        results[t.name] = run_minio(tests_py, t, logs / "conformance" / f"minio-{t.name}-{int(time.time())}")
    # A test the driver never reported (it hung past its limits) fails on that side.
    for name in set(results["gateway"]) | set(results["moto"]):
        for side in results.values():
            side.setdefault(name, {"status": "FAIL", "reason": "no result (the driver stopped)"})
    judge("minio", MINIO_VERSION, results, logs)


# ---------------------------------------------------------------------------------------------
# Gateway bugs the suites found, each reduced to one request (fixed: listing resumed at the
# later of start-after and the continuation token; UTF-8 metadata failed backend signing;
# x-amz-checksum-mode was not passed on)
# ---------------------------------------------------------------------------------------------


def test_list_v2_continuation_token_wins_over_start_after(make_gateway):
    s3 = make_gateway(n=2).client()
    for key in ("0a", "0b", "0c"):
        s3.put_object(Bucket="data", Key=key, Body=b"x")
    token = s3.list_objects_v2(Bucket="data", MaxKeys=1)["NextContinuationToken"]
    # What minio-py sends for page 2: the token, and the same text as start-after.
    page = s3.list_objects_v2(Bucket="data", MaxKeys=1, ContinuationToken=token, StartAfter=token)
    assert [o["Key"] for o in page.get("Contents", [])] == ["0b"]


def test_put_with_utf8_metadata_is_not_an_internal_error(make_gateway):
    gw = make_gateway(n=2)
    value = "你好，世界"
    r = h.signed_request(
        "PUT", f"{gw.endpoint}/data/utf8-meta", headers={"x-amz-meta-greeting": value}, data=b"x",
        # Signed over the UTF-8 text, sent as its UTF-8 bytes (as the AWS SDKs send it).
        tamper=lambda headers: headers.update({"x-amz-meta-greeting": value.encode()}),
    )
    assert r.status_code == 200, f"{r.status_code} {h.error_code(r)}"


def test_get_with_checksum_mode_returns_the_stored_checksum(make_gateway):
    s3 = make_gateway(n=2).client()
    put = s3.put_object(Bucket="data", Key="sum", Body=b"a" * 1000, ChecksumAlgorithm="CRC32")
    got = s3.get_object(Bucket="data", Key="sum", ChecksumMode="ENABLED")
    got["Body"].read()
    assert got.get("ChecksumCRC32") == put["ChecksumCRC32"]
