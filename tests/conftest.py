"""Fixtures: providers (moto_server), the shared gateway, and factories for tests that need a
gateway or provider of their own (restarts, outages, strategies)."""

from __future__ import annotations

import itertools
import re

import pytest

import harness as h

_counter = itertools.count()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


def pytest_terminal_summary(terminalreporter):
    for table in h.SUMMARIES:
        terminalreporter.write_line("")
        for line in table.splitlines():
            terminalreporter.write_line(line)


def _failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture(scope="session")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def moto1(logs):
    m = h.Moto("one", logs, "MOTO1ACCESSKEY000001", "moto-one-secret")
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="session")
def moto2(logs):
    m = h.Moto("two", logs, "MOTO2ACCESSKEY000002", "moto-two-secret")
    try:
        yield m
    finally:
        m.stop()


class Env:
    """The shared gateway and what it sits on."""

    def __init__(self, gateway: h.Gateway, moto1: h.Moto, moto2: h.Moto):
        self.gw = gateway
        self.moto1, self.moto2 = moto1, moto2
        self.reference_bucket = "reference"

    def vb(self, name: str) -> h.VBucket:
        return self.gw.vbucket(name)

    @property
    def endpoint(self):
        return self.gw.endpoint


@pytest.fixture(scope="session")
def env(logs, moto1, moto2):
    """One gateway over three backends on two providers (round-robin, so consecutive writes
    visit every backend), and two flat (`{key}` layout) backends."""
    b1 = h.Backend("b1", moto1, "real-one")
    b2 = h.Backend("b2", moto1, "real-two")
    b3 = h.Backend("b3", moto2, "real-three")
    f1 = h.Backend("f1", moto1, "flat-one")
    f2 = h.Backend("f2", moto2, "flat-two")
    for b in (b1, b2, b3, f1, f2):
        b.moto.create_bucket(b.bucket)
    moto1.create_bucket("reference")
    spread = [b1, b2, b3]
    vbuckets = [
        h.VBucket("vb", spread),
        h.VBucket("lists", spread),
        h.VBucket("flat", [f1, f2], key_layout="{key}"),
        h.VBucket("redir", spread, reads="redirect"),
        h.VBucket("autob", spread, reads="auto", writes="auto"),
        h.VBucket("limited", spread),
        h.VBucket("other", spread),
    ]
    gw = h.Gateway(logs / "gateway-main", [b1, b2, b3, f1, f2], vbuckets, {"strategy": "round-robin"})
    try:
        gw.start()
        yield Env(gw, moto1, moto2)
    finally:
        gw.stop()


@pytest.fixture
def s3(env):
    return env.gw.client()


@pytest.fixture
def prefix(request):
    """A key prefix unique to the test (tests share the session gateway's buckets)."""
    name = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"t{next(_counter)}-{name}/"


@pytest.fixture
def dump_logs_on_failure(request):
    procs = []
    yield procs
    if _failed(request):
        for p in procs:
            print(f"\n--- last lines of {p.name} ({p.log_path}) ---\n{p.tail(60)}")


@pytest.fixture
def make_gateway(logs, moto1, moto2, request):
    """Factory: a gateway of the test's own, over fresh real buckets, stopped at teardown.

    make_gateway(n=3, providers=[moto1, moto2, ...], weights=[..], max_sizes=[..],
                 layout="{bucket}/{key}", conditional_writes=False, **make_config options) -> Gateway
    Backends are named g1..gN; the one virtual bucket is `data`."""
    gateways: list[h.Gateway] = []

    def factory(
        n: int = 3,
        providers=None,
        weights=None,
        max_sizes=None,
        layout="{bucket}/{key}",
        conditional_writes=False,
        **options,
    ):
        tag = f"g{next(_counter)}"
        providers = providers or [moto1, moto1, moto2]
        backends = []
        for i in range(n):
            moto = providers[i % len(providers)]
            b = h.Backend(
                f"g{i + 1}",
                moto,
                f"{tag}-real-{i + 1}",
                weight=(weights[i] if weights else 1),
                max_size=(max_sizes[i] if max_sizes else None),
                conditional_writes=conditional_writes,
            )
            moto.create_bucket(b.bucket)
            backends.append(b)
        gw = h.Gateway(logs / f"gateway-{tag}", backends, [h.VBucket("data", backends, key_layout=layout)], options)
        gateways.append(gw)
        gw.start()
        return gw

    try:
        yield factory
    finally:
        for gw in gateways:
            if _failed(request) and gw.proc:
                print(f"\n--- last lines of {gw.proc.log_path} ---\n{gw.proc.tail(60)}")
            gw.stop()


@pytest.fixture
def make_moto(logs):
    """Factory: a provider of the test's own (for outages), stopped at teardown."""
    started: list[h.Moto] = []

    def factory(name: str) -> h.Moto:
        m = h.Moto(f"{name}-{next(_counter)}", logs, f"{name.upper()}KEY", f"{name}-secret")
        started.append(m)
        return m

    try:
        yield factory
    finally:
        for m in started:
            m.stop()
