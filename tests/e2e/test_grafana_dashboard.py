"""docs/grafana-dashboard.json cannot drift from the code: every metric name its queries use is in what GET /metrics
serves (scraped from the in-process proxy after a call), and it imports into any Grafana (a `${DS_PROMETHEUS}`
datasource input on every query)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import chat
from tests.fakes.routing_config import upstream

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def queries(dashboard: dict) -> list[tuple[dict, dict]]:
    """(panel, target) for every query of every panel, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner, target) for target in inner.get("targets", [])]
    return found


def served_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_dashboard_queries_is_served(proxy, fake_upstream, make_routing, api_key, settings):
    settings.RAINYMODEL_METRICS_TOKEN = "dashboard-test-token"
    make_routing(upstream(fake_upstream))
    _, key = api_key()
    assert proxy.post(key, json=chat()).status_code == 200
    scraped = httpx.get(proxy.url + "/metrics", headers={"Authorization": "Bearer dashboard-test-token"})
    assert scraped.status_code == 200
    served = served_names(scraped.text)

    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for _, target in queries(dashboard) for name in re.findall(r"\brainymodel_[a-z0-9_]+", target["expr"])}
    used.discard("rainymodel")  # the dashboard's uid and tag, should a query ever mention them
    assert len(used) >= 10, used
    assert used <= served, f"queried but not served: {sorted(used - served)}"
    # And the dashboard covers every family the code serves (a new metric gets a panel, or a reason not to).
    families = {f.name for f in text_string_to_metric_families(scraped.text) if f.name.startswith("rainymodel_")}
    assert families <= {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}, families


def test_the_dashboard_imports_with_a_prometheus_datasource_input():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    for panel, target in queries(dashboard):
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
