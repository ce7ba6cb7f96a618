"""The Grafana dashboard (firmware_tools/grafana): a valid dashboard whose datasources are the provisioned ones,
whose PromQL names only metrics and labels the collector's registry exposes (runtime/fleet/central/metrics.py),
and whose SQL runs on a freshly migrated central PostgreSQL database (runtime/fleet/central/store.py)."""

from __future__ import annotations

import json
import re

import pytest

from tests.fleet.dashboard import GRAFANA, dashboard, expand_macros, promql_names, targets


def _provisioned() -> dict[str, str]:
    """{uid: type} of provisioning/datasources/fieldear.yaml (its simple 'key: value' lines)."""
    text = (GRAFANA / "provisioning" / "datasources" / "fieldear.yaml").read_text()
    out = {}
    for entry in re.split(r"^\s*- ", text, flags=re.MULTILINE)[1:]:
        fields = dict(re.findall(r"^\s*(\w+):\s*(\S+)\s*$", entry, flags=re.MULTILINE))
        out[fields["uid"]] = fields["type"]
    return out


def exposed_metrics(tmp_path) -> tuple[set[str], set[str]]:
    """(sample names, label names) of the collector's registry, built as start_metrics_server builds it, with
    one device in the central database (so the per-device gauges have samples)."""
    prom = pytest.importorskip("prometheus_client")
    from runtime.fleet.central.collector import Collector, open_central
    from runtime.fleet.central.metrics import CollectorMetrics
    from runtime.fleet.mqtt import MqttSettings

    col = Collector(tmp_path / "central.db", MqttSettings(host="127.0.0.1"), clock=lambda: 1000.0)
    conn = open_central(tmp_path / "central.db")
    col.handle(conn, "fieldear/d1/events", json.dumps({"event_id": 1, "generation": "g", "label": "dog",
                                                       "start_utc": "x", "sent_ts": 999.0, "backlog": 1}).encode())
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(CollectorMetrics(col))
    names, labels = set(), set()
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    return names, labels


def test_dashboard_is_valid_and_uses_the_provisioned_datasources():
    dash = dashboard()
    provisioned = _provisioned()
    assert set(provisioned.values()) == {"prometheus", "postgres"}
    assert dash["uid"] and dash["title"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["type"] and panel["title"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for ds in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
            assert provisioned.get(ds["uid"]) == ds["type"], (panel["title"], ds)
        for t in panel["targets"]:
            assert ("expr" in t) == (t["datasource"]["type"] == "prometheus"), panel["title"]
            assert ("rawSql" in t) == (t["datasource"]["type"] == "postgres"), panel["title"]
    provider = (GRAFANA / "provisioning" / "dashboards" / "fieldear.yaml").read_text()
    assert re.search(r"^\s*type:\s*file\s*$", provider, re.MULTILINE) and re.search(r"^\s*path:\s*/\S+", provider, re.MULTILINE)


def test_promql_names_only_metrics_and_labels_the_collector_exposes(tmp_path):
    names, labels = exposed_metrics(tmp_path)
    assert "fieldear_collector_stored_total" in names and "fieldear_device_backlog" in names
    used = set()
    for title, target in targets("prometheus"):
        metrics, used_labels = promql_names(target["expr"])
        assert metrics, (title, target["expr"])
        assert metrics <= names, (title, sorted(metrics - names))
        assert used_labels <= labels, (title, sorted(used_labels - labels))
        for legend_label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
            assert legend_label in used_labels or legend_label in labels, (title, legend_label)
        used |= metrics
    # the panels the dashboard promises: devices online, backlog, lag, collector health
    assert {"fieldear_device_last_seen_timestamp_seconds", "fieldear_device_backlog", "fieldear_device_lag_seconds",
            "fieldear_collector_up", "fieldear_collector_db_errors_total"} <= used


def test_the_name_check_catches_a_typo(tmp_path):
    names, labels = exposed_metrics(tmp_path)
    metrics, used_labels = promql_names('sum by (kind) (rate(fieldear_collector_stored[5m]))')
    assert metrics == {"fieldear_collector_stored"} and not metrics <= names  # counters are exposed as _total
    metrics, used_labels = promql_names('fieldear_device_backlog{devcie="d1"} or vector(0)')
    assert metrics <= names and used_labels == {"devcie"} and not used_labels <= labels


def test_sql_runs_on_a_migrated_central_database(pg_url):
    from runtime.fleet.central.store import open_store

    with open_store(pg_url) as store:
        store.seen("d1", "g", 1000.0, 2, 0.5)
        store.set_status("d1", "online", True, 1000.0)
        for event_id, start in ((1, "2026-05-01T04:12:07.250Z"), (2, "1777777777.5"), (3, None)):
            store.insert_event("d1", "g", event_id, {"label": "dog", "start_utc": start, "peak": 0.9}, None, 999.0,
                               1000.0)
        store.insert_health("d1", "g", 1, "2026-05-01T00:00:00Z", '{"t": 40}', 1000.0)
        store.commit()
        queries = list(targets("postgres"))
        assert queries
        for title, target in queries:
            sql = expand_macros(target["rawSql"])
            store.execute(f"EXPLAIN {sql}").fetchall()  # names every table and column, or raises
            rows = store.execute(sql).fetchall()
            store.rollback()
            assert rows, title
            if target["format"] == "time_series":
                cols = [c.name for c in store.execute(sql).description]
                store.rollback()
                assert cols[0] == "time" and "value" in cols, title
