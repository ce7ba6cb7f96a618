"""`fieldear collect --metrics-port`: the Prometheus text endpoint (prometheus_client, optional extra)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet.broker import add_event, make_device_db, wait_until
from tests.scrape import scrape

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("paho.mqtt.client")


def test_prometheus_client_is_imported_only_for_the_endpoint():
    code = ("import sys, runtime.cli.fleet, runtime.fleet.central.collector, runtime.fleet.central.metrics; "
            "sys.exit('prometheus_client' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=60).returncode == 0


def test_metrics_of_the_collector_and_its_devices(tmp_path):
    pytest.importorskip("prometheus_client")
    from runtime.fleet.central.collector import Collector, open_central
    from runtime.fleet.central.metrics import start_metrics_server
    from runtime.fleet.mqtt import MqttSettings

    col = Collector(tmp_path / "central.db", MqttSettings(host="127.0.0.1"), clock=lambda: 1000.0)
    conn = open_central(tmp_path / "central.db")
    for device, event_id, sent in (("d1", 1, 998.5), ("d1", 2, 999.0), ("d2", 1, 990.0)):
        msg = {"event_id": event_id, "generation": "g", "label": "dog", "start_utc": "x", "sent_ts": sent,
               "backlog": 3 - event_id}
        col.handle(conn, f"fieldear/{device}/events", json.dumps(msg).encode())
    col.handle(conn, "fieldear/d1/events", json.dumps({"event_id": 2, "generation": "g", "label": "dog",
                                                        "start_utc": "x", "sent_ts": 999.5, "backlog": 0}).encode())
    col.handle(conn, "fieldear/d1/health", json.dumps({"health_id": 1, "generation": "g"}).encode())
    col.handle(conn, "fieldear/d1/events", b"garbage")
    server = start_metrics_server(col, 0)
    try:
        m = scrape(server.server_address[1])
    finally:
        server.shutdown()
    assert m["fieldear_collector_messages_total"] == 6
    assert m['fieldear_collector_stored_total{kind="events"}'] == 3
    assert m['fieldear_collector_stored_total{kind="health"}'] == 1
    assert m["fieldear_collector_duplicates_total"] == 1 and m["fieldear_collector_rejected_total"] == 1
    assert m["fieldear_collector_up"] == 0  # not connected to a broker here
    assert m['fieldear_device_last_seen_timestamp_seconds{device="d1"}'] == 1000.0
    assert m['fieldear_device_lag_seconds{device="d1"}'] == 0.5  # the duplicate was its last event message
    assert m['fieldear_device_lag_seconds{device="d2"}'] == 10.0
    assert m['fieldear_device_backlog{device="d1"}'] == 0 and m['fieldear_device_backlog{device="d2"}'] == 2
    assert m['fieldear_device_events{device="d1"}'] == 2 and m['fieldear_device_events{device="d2"}'] == 1


def test_collect_serves_metrics_while_collecting(tmp_path, broker):
    pytest.importorskip("prometheus_client")
    from runtime.fleet.mqtt import MqttSettings, send_pending
    from tests.fleet.broker import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "collect", "--broker", broker.address, "--db",
                             str(tmp_path / "central.db"), "--metrics-port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        assert proc.stdout.readline().decode().strip() == f"metrics on http://127.0.0.1:{port}/metrics"
        assert wait_until(lambda: scrape(port).get("fieldear_collector_up") == 1.0, 10)
        dev = make_device_db(tmp_path / "dev.db")
        for i in range(4):
            add_event(dev, "m-1", "dog", float(i))
        result = send_pending(tmp_path / "dev.db", MqttSettings.from_config(None, broker.address), "m-1", timeout_s=10)
        assert result.acked["events"] == 4 and result.status.total_pending == 0
        m = scrape(port)
        assert m['fieldear_collector_stored_total{kind="events"}'] == 4
        assert m["fieldear_collector_acked_rows_total"] >= 4
        assert m['fieldear_device_events{device="m-1"}'] == 4 and m['fieldear_device_backlog{device="m-1"}'] == 4
        assert m['fieldear_device_lag_seconds{device="m-1"}'] >= 0
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_metrics_port_without_the_extra_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    from runtime.cli.main import main as cli_main

    real_import = builtins.__import__

    def no_prometheus(name, *a, **kw):
        if name.startswith("prometheus_client"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_prometheus)
    rc = cli_main(["collect", "--broker", "127.0.0.1:1", "--db", str(tmp_path / "c.db"), "--metrics-port", "0"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prometheus_client" in err[0] and "fieldear[metrics]" in err[0]
