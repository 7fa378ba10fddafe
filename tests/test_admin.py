"""The admin API and the web console, on the server: who gets in, what it shows, and that its
changes steer placement, persist across a restart and a config reload, and can be undone.
The console is driven in headless Chromium (Debian's chromium and chromium-driver, Selenium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

import harness as h

TOKEN = "e2e-admin-token"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def api(gw, method, path, body=None, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{gw.endpoint}/_admin/api{path}", json=body, headers=headers, timeout=30)


def keys_on(backend) -> list[str]:
    return backend.moto.keys(backend.bucket)


def test_only_an_admin_gets_in_and_sees_every_backend(make_gateway):
    gw = make_gateway(2, max_sizes=["1MB", None], admin_token=TOKEN)
    anonymous = api(gw, "GET", "/buckets", token=None)
    assert anonymous.status_code == 403 and anonymous.json()["code"] == "AccessDenied"
    assert api(gw, "GET", "/buckets", token="wrong").status_code == 403
    # SigV4 like any S3 call: an `admin` credential gets in, a read-only one does not.
    url = f"{gw.endpoint}/_admin/api/buckets"
    assert h.signed_request("GET", url).status_code == 200
    assert h.signed_request("GET", url, h.READONLY_KEY, h.READONLY_SECRET).status_code == 403

    listing = api(gw, "GET", "/buckets").json()
    assert listing["total"] == 2 and listing["strategy"] == "round-robin"
    g1, g2 = listing["buckets"]
    assert (g1["name"], g1["max_size_bytes"], g2["available_size"]) == ("g1", 1 << 20, -1)
    for field in ("endpoint", "region", "used_size", "usage_percent", "weight", "enabled", "available",
                  "last_checked", "operation_count_a", "operation_count_b", "operation_limits"):
        assert field in g1, field
    h.wait_until("a probe in the history", lambda: api(gw, "GET", "/buckets/g1").json()["health_history"], 15)
    health = api(gw, "GET", "/health").json()
    assert (health["status"], health["available_buckets"], health["load_balancer_strategy"]) == ("healthy", 2, "round-robin")
    vb = api(gw, "GET", "/virtual-buckets").json()["virtual_buckets"]
    assert vb == [{"name": "data", "backends": ["g1", "g2"], "reads": "proxy", "writes": "proxy",
                   "anonymous_read": False, "created_at_run_time": False}]
    # Bad input: an S3 code in JSON, nothing changed.
    bad = api(gw, "PUT", "/strategy", {"strategy": "fastest"})
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidArgument"
    assert api(gw, "PATCH", "/buckets/nope", {"weight": 2}).status_code == 404
    assert api(gw, "GET", "/health").json()["load_balancer_strategy"] == "round-robin"


def test_a_read_only_backend_takes_no_uploads_across_restart_and_reload_until_cleared(make_gateway):
    gw = make_gateway(2, admin_token=TOKEN)
    s3 = gw.client()
    g1, g2 = gw.backends
    r = api(gw, "PATCH", "/buckets/g1", {"read_only": True})
    assert r.status_code == 200, r.text
    assert r.json()["read_only"] is True and r.json()["overridden"] == {"read_only": True}

    def upload(prefix, n=6):
        for i in range(n):
            s3.put_object(Bucket="data", Key=f"{prefix}/{i}", Body=f"{prefix}-{i}".encode())

    upload("while-read-only")
    assert not [k for k in keys_on(g1) if "while-read-only" in k]
    assert len([k for k in keys_on(g2) if "while-read-only" in k]) == 6
    # Reads of what g1 already holds keep working; the override is in the store, so it
    # outlives a restart and a reload of the unchanged config file.
    gw.stop()
    gw.start()
    assert api(gw, "GET", "/buckets/g1").json()["read_only"] is True
    gw.config_path.write_text(gw.config_text() + "\n# touched\n")
    upload("after-restart")
    assert not [k for k in keys_on(g1) if "after-restart" in k]

    # The strategy too; the overrides read back; clearing returns to the config as written.
    assert api(gw, "PUT", "/strategy", {"strategy": "least-space"}).json() == {"strategy": "least-space"}
    assert api(gw, "GET", "/overrides").json() == {"strategy": "least-space", "backends": {"g1": {"read_only": True}}}
    cleared = api(gw, "DELETE", "/overrides").json()
    assert cleared["strategy"] == "round-robin"
    assert all(not b["read_only"] for b in cleared["buckets"])
    upload("after-clear")
    assert [k for k in keys_on(g1) if "after-clear" in k], "g1 takes uploads again"
    # Probes on demand: a fresh check time.
    before = api(gw, "GET", "/buckets/g2").json()["health_history"][-1]["at"]
    probed = api(gw, "POST", "/health-check").json()
    assert probed["buckets"][1]["health_history"][-1]["at"] >= before


def test_the_console_signs_in_shows_both_backends_and_a_read_only_click_moves_uploads(make_gateway, logs):
    gw = make_gateway(2, max_sizes=["10MB", None], admin_token=TOKEN)
    from selenium.webdriver.common.by import By

    browser = h.chromium_driver()
    try:
        browser.set_page_load_timeout(30)
        browser.get(f"{gw.endpoint}/_admin/")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "login").click()

        def rows():
            found = browser.find_elements(By.CSS_SELECTOR, "#backends tr")
            return {r.get_attribute("data-backend"): r for r in found} if len(found) == 2 else None

        h.wait_until("both backends listed", rows, 20)
        s3 = gw.client()
        for i in range(4):
            s3.put_object(Bucket="data", Key=f"before/{i}", Body=b"x" * 1000)
        api(gw, "POST", "/usage-scan")
        # The operator marks g1 read-only in the page ...
        h.wait_until("g1's checkbox", lambda: rows()["g1"].find_element(By.CSS_SELECTOR, "input.read-only"), 10).click()
        h.wait_until("the change stored", lambda: api(gw, "GET", "/buckets/g1").json()["read_only"], 10)
        h.wait_until("the page shows it", lambda: rows()["g1"].find_element(By.CSS_SELECTOR, "input.read-only").is_selected(), 10)
        # ... and new uploads go to the other backend.
        for i in range(4):
            s3.put_object(Bucket="data", Key=f"after/{i}", Body=b"y" * 1000)
        g1, g2 = gw.backends
        assert not [k for k in keys_on(g1) if "/after/" in k]
        assert len([k for k in keys_on(g2) if "/after/" in k]) == 4

        def placed():
            r = rows()
            return r and r["g2"].find_elements(By.TAG_NAME, "td")[5].text == "6"

        h.wait_until("the page counts the placements", placed, 15)
        shot = logs / "console.png"
        browser.save_screenshot(str(shot))
        if os.environ.get("S3_BALANCE_UPDATE_SCREENSHOTS") == "1":
            shutil.copy(shot, DOCS / "console.png")
        assert "healthy" in browser.find_element(By.ID, "overall").text
    finally:
        browser.quit()
