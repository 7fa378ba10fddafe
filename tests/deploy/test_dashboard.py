"""The Grafana dashboard and the alert rules against real data.

A real Prometheus (Debian's package) on 127.0.0.1 scrapes a running gateway, the static
binary that goes into the image, over moto_server backends, while a short bounded load runs
(uploads, downloads, lists, misses). Then every query of every dashboard panel must return
data through Prometheus's HTTP API, the new counters must add up to what the load did, and
the alert rules, loaded by that Prometheus from deploy/monitoring, must all evaluate and go
pending on the metrics the load produced: a backend filled past 85 %, a budget spent, a
gateway that stops answering scrapes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import pytest
import requests
import yaml

import harness as h
from deploy_support import DEPLOY, need

DASHBOARD = DEPLOY / "monitoring" / "grafana" / "dashboards" / "s3-balance.json"
RULES = DEPLOY / "monitoring" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = DEPLOY / "monitoring" / "prometheus" / "prometheus.yml"

# Grafana's variables in the panel queries, and what stands for them here: the whole load
# fits in one minute.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m"}

OBJECT_SIZE = 90 * 1024
FULL_BACKEND_CAPACITY = "1MB"  # d1: filled past 85 % by the load
BUDGETED_CLASS_A = 8  # d2: spent by the load's uploads


@dataclass
class BudgetGateway(h.Gateway):
    """The harness gateway with monthly operation limits on some backends (make_config
    writes the rest of the config)."""

    limits: dict[str, dict] = field(default_factory=dict)

    def config_text(self, **changes) -> str:
        doc = yaml.safe_load(super().config_text(**changes))
        for entry in doc["buckets"]:
            if entry["name"] in self.limits:
                entry["operation_limits"] = self.limits[entry["name"]]
        return yaml.safe_dump(doc, sort_keys=False)


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, Grafana variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unhandled variable in {panel['title']!r}: {expr}"
            queries.append((panel["title"], expr))
    return queries


class Prometheus:
    def __init__(self, log_dir, config: dict, port: int):
        self.url = f"http://{h.HOST}:{port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        config_path = log_dir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc = h.Proc(
            "prometheus",
            [
                need("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={log_dir / 'tsdb'}",
                f"--web.listen-address={h.HOST}:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            log_dir,
        )
        h.wait_until("prometheus ready", self._ready, 60)

    def _ready(self):
        if not self.proc.alive():
            raise RuntimeError(f"prometheus exited:\n{self.proc.tail()}")
        return requests.get(self.url + "/-/ready", timeout=2).status_code == 200

    def api(self, path: str, **params):
        r = requests.get(self.url + "/api/v1/" + path, params=params, timeout=10)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {r.status_code} {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def stop(self):
        return self.proc.stop()


def conditions_reached(gw: h.Gateway) -> bool:
    """d1 is past 85 % of its capacity and d2 has spent its class A budget."""
    text = gw.metrics()
    used = h.metric_value(text, "s3_balance_bucket_usage_bytes", bucket="d1") or 0
    capacity = h.metric_value(text, "s3_balance_bucket_capacity_bytes", bucket="d1")
    spent = h.metric_value(text, "s3_balance_bucket_monthly_operations", bucket="d2", **{"class": "A"}) or 0
    return bool(capacity) and used / capacity > 0.85 and spent >= BUDGETED_CLASS_A


def alert_states(prom: Prometheus, name: str) -> dict[tuple, str]:
    """Labels (without severity) -> state, of the alerts of rule `name`."""
    out = {}
    for a in prom.alerts():
        if a["labels"].get("alertname") == name:
            labels = tuple(sorted((k, v) for k, v in a["labels"].items() if k not in ("alertname", "severity")))
            out[labels] = a["state"]
    return out


def test_every_panel_has_data_and_the_alerts_fire_on_real_metrics(
    logs, moto1, moto2, static_binary, monkeypatch, dump_logs_on_failure
):
    need("prometheus")
    monkeypatch.setenv("S3_BALANCE_BIN", str(static_binary))
    d1 = h.Backend("d1", moto1, "dash-one", max_size=FULL_BACKEND_CAPACITY)
    d2 = h.Backend("d2", moto1, "dash-two")
    d3 = h.Backend("d3", moto2, "dash-three")
    for b in (d1, d2, d3):
        b.moto.create_bucket(b.bucket)
    gw = BudgetGateway(
        logs / "gateway-dashboard",
        [d1, d2, d3],
        [h.VBucket("dash", [d1, d2, d3])],
        # Probes patient enough for a loaded 2-core machine: a backend must not flap.
        {"strategy": "round-robin", "health_check_period": "1s", "update_stats_period": "2s",
         "probe_timeout": "5s", "fall": 3},
        limits={"d2": {"type_a": BUDGETED_CLASS_A}},
    )
    prom = None
    try:
        gw.start()
        dump_logs_on_failure.append(gw.proc)

        # The compose Prometheus config, with the gateway as a static target and a 1 s pace.
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(RULES)]
        job = config["scrape_configs"][0]
        assert job["job_name"] == "s3-balance"
        job.pop("dns_sd_configs")
        job["static_configs"] = [{"targets": [f"{h.HOST}:{gw.port}"]}]
        prom = Prometheus(logs / "prometheus-dashboard", config, h.free_port())
        dump_logs_on_failure.append(prom.proc)
        h.wait_until("first scrape", lambda: prom.value('up{job="s3-balance"}') == 1, 30)

        # The load: bounded in count and in time. At least 30 rounds spread over several
        # scrapes (a counter series that first appears after the load would show a rate of
        # 0: Prometheus sees no increase), then until d1 is past 85 % and d2's budget is
        # spent (the gateway's own /metrics says so).
        s3 = gw.client()
        load = {"uploaded": 0, "downloaded": 0, "puts": 0, "rounds": 0}

        def one_round():
            i = load["rounds"]
            load["rounds"] += 1
            body = h.payload(OBJECT_SIZE + i, f"dash-{i}")
            s3.put_object(Bucket="dash", Key=f"load/{i:03d}", Body=body)
            load["uploaded"] += len(body)
            load["puts"] += 1
            got = s3.get_object(Bucket="dash", Key=f"load/{i:03d}")["Body"].read()
            assert got == body
            load["downloaded"] += len(got)
            s3.head_object(Bucket="dash", Key=f"load/{i:03d}")
            if i % 5 == 0:
                s3.list_objects_v2(Bucket="dash", Prefix="load/")
                with pytest.raises(s3.exceptions.NoSuchKey):
                    s3.get_object(Bucket="dash", Key=f"missing/{i}")

        started = time.monotonic()
        deadline = started + 90
        for i in range(150):
            if i >= 30 and i % 5 == 0 and time.monotonic() - started > 5 and conditions_reached(gw):
                break
            one_round()
            time.sleep(0.1)
            assert time.monotonic() < deadline, "the load took too long"
        s3.delete_object(Bucket="dash", Key="load/000")
        h.wait_until("d1 past 85 % and d2's budget spent", lambda: conditions_reached(gw), 10)

        # Every panel query returns data, with at least one finite positive value (each
        # panel shows something the load did). Gauges follow the gateway's 2 s refresh;
        # a round of load per poll keeps the rate panels fed while they are read.
        queries = panel_queries()
        assert len(queries) >= 14

        def all_panels_have_data():
            for _ in range(5):
                one_round()
            missing = []
            for title, expr in queries:
                values = [float(r["value"][1]) for r in prom.query(expr)]
                if not any(math.isfinite(v) and v > 0 for v in values):
                    missing.append((title, expr, values))
            assert not missing, "\n".join(f"{t}: {e} -> {v}" for t, e, v in missing)
            return True

        h.wait_until("every panel query returns data", all_panels_have_data, 30, interval=1)

        # The counters behind the traffic and placement panels add up to the load.
        h.wait_until(
            "bytes in = bytes uploaded",
            lambda: prom.value('sum(s3_balance_s3_bytes_total{direction="in"})') == load["uploaded"],
            15,
        )
        assert prom.value('sum(s3_balance_s3_bytes_total{direction="in",operation="PutObject"})') == load["uploaded"]
        assert prom.value('sum(s3_balance_s3_bytes_total{direction="out",operation="GetObject"})') >= load["downloaded"]
        assert prom.value("sum(s3_balance_balancer_decisions_total)") == load["puts"]
        assert prom.value('sum(s3_balance_s3_operations_total{status="error",operation="GetObject"})') >= 8
        assert prom.value('s3_balance_bucket_monthly_operation_limit{bucket="d2",class="A"}') == BUDGETED_CLASS_A
        assert prom.value('s3_balance_bucket_monthly_operations{bucket="d2",class="A"}') >= BUDGETED_CLASS_A
        assert prom.query('s3_balance_bucket_capacity_bytes{bucket="d3"}') == [], "unlimited: no capacity series"

        # The alert rules: all loaded and evaluated without error ...
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        expected = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
        assert sorted(r["name"] for r in rules) == sorted(expected)
        h.wait_until(
            "every rule evaluated",
            lambda: all(r["health"] == "ok" for r in prom.api("rules")["groups"][0]["rules"]),
            15,
        )
        # ... and the ones whose condition the load created are active (pending: their
        # `for:` is minutes long) for the right backend and nothing else.
        def active(name):
            return {k: v for k, v in alert_states(prom, name).items() if v in ("pending", "firing")}

        h.wait_until("capacity alert on d1", lambda: list(active("S3BalanceCapacityHigh")) == [(("bucket", "d1"),)], 20)
        spent = (("bucket", "d2"), ("class", "A"))
        h.wait_until("budget alerts on d2", lambda: list(active("S3BalanceOperationBudgetExhausted")) == [spent], 20)
        assert list(active("S3BalanceOperationBudgetHigh")) == [spent]
        for quiet in ("S3BalanceBackendDown", "S3BalanceScrapeFailing", "S3BalanceMetricsAbsent"):
            assert active(quiet) == {}, quiet

        # SIGTERM: the image's binary drains and exits 0; then the scrape fails and the
        # scrape alert goes pending for that instance.
        gw.proc.signal(15)
        assert gw.proc.popen.wait(15) == 0, gw.proc.tail()
        instance = (("instance", f"{h.HOST}:{gw.port}"), ("job", "s3-balance"))
        h.wait_until("scrape alert", lambda: list(active("S3BalanceScrapeFailing")) == [instance], 20)
    finally:
        if prom:
            prom.stop()
        gw.stop()
