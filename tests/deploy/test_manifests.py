"""Static checks of deploy/: compose, Kubernetes, the Helm chart, linters, the alert rules.

What runs (all offline, on 127.0.0.1 or no network at all):
- `docker-compose config` (Docker Compose v2, the standalone binary; parses and validates
  against the compose spec, needs no engine) for every profile;
- kubernetes-validate on the plain manifests and on the rendered chart (`helm template`),
  against the Kubernetes 1.30 schemas; the two Prometheus Operator kinds have no schema
  there and are checked here (their rules by promtool);
- `helm lint` with every optional part on;
- checkov on deploy/ (Kubernetes, Dockerfile, Helm), yamllint on the YAML;
- `promtool check config`, `promtool check rules` and `promtool test rules`;
- every config document shipped in deploy/ loads with the real binary (`s3-balance check`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from deploy_support import DEPLOY, ROOT, need

COMPOSE = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"
CHART = DEPLOY / "helm" / "s3-balance"
MONITORING = DEPLOY / "monitoring"
RULES = MONITORING / "prometheus" / "alerts.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "s3-balance.json"
KUBERNETES_VERSION = "1.30.0"
# Every optional part of the chart on (and the SQLite variant's volume).
CHART_ALL_ON = [
    "--set", "ingress.enabled=true", "--set", "ingress.tlsSecretName=s3-balance-tls",
    "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
    "--set", "grafanaDashboard.enabled=true", "--set", "secrets.S3_BALANCE_ACCESS_KEY=x",
]
CHART_SINGLE = ["--set", "persistence.enabled=true", "--set", "autoscaling.enabled=false", "--set", "replicaCount=1",
                "--set", "podDisruptionBudget.enabled=false", "--set", "existingSecret=mine"]


def run(args, **kwargs) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert r.returncode == 0, f"{args} exited {r.returncode}\nstdout:\n{r.stdout[-6000:]}\nstderr:\n{r.stderr[-6000:]}"
    return r


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def rule_groups() -> list:
    return yaml.safe_load(RULES.read_text())["groups"]


# --- compose -------------------------------------------------------------------------------


def compose_config(*profiles: str) -> dict:
    args = [need("docker-compose")]
    for p in profiles:
        args += ["--profile", p]
    out = run(args + ["config", "--format", "json"], cwd=COMPOSE).stdout
    return json.loads(out)


def test_compose_profiles_validate_and_start_what_they_say():
    single = compose_config()  # .env: COMPOSE_PROFILES=single
    assert set(single["services"]) == {"s3-balance"}
    assert set(compose_config("single", "monitoring")["services"]) == {"s3-balance", "prometheus", "grafana"}
    replicas = compose_config("replicas", "monitoring")
    assert set(replicas["services"]) == {"gateway", "dynamodb", "dynamodb-table", "lb", "prometheus", "grafana"}

    gw = single["services"]["s3-balance"]
    assert gw["healthcheck"]["test"] == ["CMD", "/usr/local/bin/s3-balance", "healthcheck"]
    assert gw["read_only"] is True and gw["cap_drop"] == ["ALL"]
    assert [p["target"] for p in gw["ports"]] == [8080]
    mounts = {v["target"]: v for v in gw["volumes"]}
    assert mounts["/etc/s3-balance/config.yaml"]["read_only"] is True
    assert mounts["/var/lib/s3-balance"]["type"] == "volume"

    g = replicas["services"]["gateway"]
    assert g["deploy"]["replicas"] == 2
    assert g["environment"]["AWS_ENDPOINT_URL_DYNAMODB"] == "http://dynamodb:8000"
    assert g["depends_on"]["dynamodb-table"]["condition"] == "service_completed_successfully"
    assert replicas["services"]["lb"]["depends_on"]["gateway"]["condition"] == "service_healthy"
    # Every file a service mounts exists.
    for name, service in replicas["services"].items():
        for v in service.get("volumes", []):
            if v["type"] == "bind":
                assert Path(v["source"]).exists(), f"{name}: {v['source']}"


def test_compose_rejects_what_the_spec_does_not_allow(tmp_path):
    """The validator really validates (an unknown key fails)."""
    bad = tmp_path / "compose.yaml"
    bad.write_text((COMPOSE / "compose.yaml").read_text().replace("    read_only: true\n", "    read_only: true\n    readonly_typo: 1\n", 1))
    (tmp_path / ".env").write_text("COMPOSE_PROFILES=single\n")
    r = subprocess.run([need("docker-compose"), "-f", str(bad), "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "readonly_typo" in r.stderr


# --- Kubernetes and Helm -------------------------------------------------------------------


def kubernetes_validate(path: Path):
    """Schema validation of every document of `path` except the Prometheus Operator kinds."""
    docs = documents(path.read_text())
    core = [d for d in docs if d["apiVersion"] != "monitoring.coreos.com/v1"]
    if not core:
        return
    target = Path(os.environ.get("TMPDIR", "/tmp")) / f"kv-{os.getpid()}-{path.name}"
    target.write_text(yaml.safe_dump_all(core))
    try:
        run([need("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, target])
    finally:
        target.unlink()


def check_operator_kinds(docs: list[dict]):
    for d in docs:
        if d["kind"] == "ServiceMonitor":
            assert d["spec"]["jobLabel"] == "app.kubernetes.io/name"
            (endpoint,) = d["spec"]["endpoints"]
            assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
        elif d["kind"] == "PrometheusRule":
            assert d["spec"]["groups"] == rule_groups(), "run scripts/sync-deploy-monitoring"


def test_kubernetes_manifests_validate(tmp_path):
    manifests = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    docs = []
    for path in manifests + [KUBERNETES / "secret.yaml.example"]:
        kubernetes_validate(path)
        docs += documents(path.read_text())
    # kustomization.yaml applies everything but the Secret (the user's) and the Prometheus
    # Operator kinds (rejected by a cluster without its CRDs).
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    operator = {"servicemonitor.yaml", "prometheusrule.yaml"}
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifests if p.name not in operator)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted([
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule",
    ])
    check_operator_kinds(docs)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"s3-balance"}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["envFrom"][0]["secretRef"]["name"] == "s3-balance-secrets"
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["s3.example.com", "*.s3.example.com"]
    # The PrometheusRule's groups pass promtool as a rule file.
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    run([need("promtool"), "check", "rules", rules_file])


def helm_template(*args: str) -> str:
    return run([need("helm"), "template", "s3-balance", CHART, "--namespace", "s3-balance", *args]).stdout


def test_helm_chart_lints_and_renders_valid_manifests(tmp_path):
    run([need("helm"), "lint", "--strict", CHART, *CHART_ALL_ON])
    for variant, args in (("default", []), ("all-on", CHART_ALL_ON), ("single", CHART_SINGLE)):
        rendered = helm_template(*args)
        path = tmp_path / f"{variant}.yaml"
        path.write_text(rendered)
        kubernetes_validate(path)
        docs = documents(rendered)
        check_operator_kinds(docs)
        kinds = {d["kind"] for d in docs}
        if variant == "all-on":
            assert kinds == {"ConfigMap", "Secret", "Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
                             "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"}
            dashboard = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
            assert json.loads(dashboard["data"]["s3-balance.json"]) == json.loads(DASHBOARD.read_text())
            ingress = next(d for d in docs if d["kind"] == "Ingress")
            assert [r["host"] for r in ingress["spec"]["rules"]] == ["s3.example.com", "*.s3.example.com"]
        if variant == "single":
            assert "PersistentVolumeClaim" in kinds and "HorizontalPodAutoscaler" not in kinds
            deployment = next(d for d in docs if d["kind"] == "Deployment")
            assert deployment["spec"]["strategy"]["type"] == "Recreate"
            assert deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"] == "mine"


def test_chart_copies_match_their_sources():
    """The chart carries copies of the rules and the dashboard (Helm reads no file outside the
    chart); scripts/sync-deploy-monitoring refreshes them."""
    assert (CHART / "files" / "alerts.yml").read_text() == RULES.read_text(), "run scripts/sync-deploy-monitoring"
    assert (CHART / "files" / "s3-balance.json").read_text() == DASHBOARD.read_text(), "run scripts/sync-deploy-monitoring"


# --- linters -------------------------------------------------------------------------------

# checkov findings accepted, and why (each is about where the manifests are deployed, not
# what they are).
CHECKOV_SKIPS = {
    # The image is built by its user and pushed to their own registry: no digest can be
    # written here (the chart's image.digest pins one).
    "CKV_K8S_43": "image digest",
    # IfNotPresent with a versioned tag; Always would pull on every pod start.
    "CKV_K8S_15": "image pull policy Always",
    # The config's ${NAME} substitution reads the environment (as the Worker's secrets and
    # the Lambda's environment do); the values come from a Secret.
    "CKV_K8S_35": "secrets as environment variables",
    # checkov renders the chart into `default`; the chart installs into the release's
    # namespace (the plain manifests use `s3-balance`).
    "CKV_K8S_21": "default namespace",
}


def test_checkov_finds_nothing_unexplained():
    # checkov's Helm framework renders the chart with the `helm` on its PATH.
    helm_dir = str(Path(need("helm")).parent)
    env = dict(os.environ, PATH=helm_dir + os.pathsep + os.environ.get("PATH", ""))
    skips = ",".join(CHECKOV_SKIPS)
    r = subprocess.run(
        [need("checkov"), "--directory", DEPLOY, "--framework", "kubernetes", "dockerfile", "helm",
         "--skip-check", skips, "--compact", "--quiet", "--output", "cli", "--skip-download"],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=env,
    )
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-4000:]
    # Each framework really ran (a missing helm would drop the chart silently).
    for framework in ("kubernetes", "dockerfile", "helm"):
        assert f"{framework} scan results:" in r.stdout, r.stdout[-4000:]


def test_yamllint():
    run([need("yamllint"), "--strict", "-c", ".yamllint.yaml", "."], cwd=DEPLOY)


# --- Prometheus ----------------------------------------------------------------------------


def test_prometheus_config_and_rules():
    run([need("promtool"), "check", "config", MONITORING / "prometheus" / "prometheus.yml"])
    out = run([need("promtool"), "check", "rules", RULES]).stdout
    assert f"SUCCESS: {sum(len(g['rules']) for g in rule_groups())} rules found" in out


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests():
    tests = yaml.safe_load((MONITORING / "prometheus" / "alerts.test.yml").read_text())
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"]}
    fired = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if not t["exp_alerts"]}
    assert fired == alerts, f"alerts never made to fire: {alerts - fired}"
    assert quiet == alerts, f"alerts never shown quiet: {alerts - quiet}"
    run([need("promtool"), "test", "rules", "alerts.test.yml"], cwd=MONITORING / "prometheus")


# --- configs -------------------------------------------------------------------------------

SECRETS = {
    "S3_BALANCE_ACCESS_KEY": "AKIATESTACCESSKEY001", "S3_BALANCE_SECRET_KEY": "test-secret-key",
    "S3_BALANCE_UPLOAD_ID_SECRET": "test-upload-id-secret", "R2_ACCESS_KEY_ID": "r2", "R2_SECRET_ACCESS_KEY": "r2s",
    "B2_KEY_ID": "b2", "B2_APPLICATION_KEY": "b2s",
}


def shipped_configs(tmp_path) -> dict[str, str]:
    configs = {
        "compose config.yaml": (COMPOSE / "config.yaml").read_text(),
        "compose config.replicas.yaml": (COMPOSE / "config.replicas.yaml").read_text(),
    }
    for d in documents((KUBERNETES / "configmap.yaml").read_text()):
        configs["kubernetes configmap"] = d["data"]["config.yaml"]
    for d in documents(helm_template()):
        if d["kind"] == "ConfigMap":
            configs["helm values"] = d["data"]["config.yaml"]
    return configs


def test_every_shipped_config_loads_in_the_gateway(tmp_path, static_binary):
    env = dict(os.environ, **SECRETS, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
               AWS_EC2_METADATA_DISABLED="true")
    configs = shipped_configs(tmp_path)
    assert len(configs) == 4
    for name, text in configs.items():
        path = tmp_path / "config.yaml"
        path.write_text(text.replace("/var/lib/s3-balance/", f"{tmp_path}/"))
        # The backends' endpoints are placeholders: the probes fail (offline), the config
        # must not.
        r = subprocess.run([str(static_binary), "check", "--config", str(path)], capture_output=True, text=True,
                           timeout=120, env=env)
        assert "config ok: 2 backends, 1 virtual buckets" in r.stdout, f"{name}:\n{r.stdout}\n{r.stderr}"
        assert "warning" not in r.stderr, f"{name}: {r.stderr}"
