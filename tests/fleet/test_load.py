"""The load bench (tests/bench/bench_fleet_load.py) at a small size: 20 simulated devices (real device logs, the
product's outbox sender) in 2 processes through one Mosquitto into one `fieldear collect` process on PostgreSQL,
the broker SIGKILLed in the middle of 15 s of logging. Every event on the devices is in the centre exactly once,
every health row too, every outbox drained. Short timeouts via settings: ack timeout 2 s, backoff 0.1-1 s."""

from __future__ import annotations

import pytest

from tests.bench.bench_fleet_load import LoadSettings, make_plans, run_load
from tests.fleet.broker import require_mosquitto

pytest.importorskip("paho.mqtt.client")
pytest.importorskip("prometheus_client")  # the bench reads the collector's /metrics


@pytest.mark.slow
def test_twenty_devices_through_a_broker_sigkill_into_postgres(tmp_path, pg_url):
    require_mosquitto()
    s = LoadSettings(devices=20, seconds=15.0, event_every_s=1.0, health_every_s=3.0, procs=2, kill_at=0.5,
                     down_s=2.0, backoff_s=(0.1, 1.0), ack_timeout_s=2.0, drain_timeout_s=30.0)
    r = run_load(tmp_path, s, pg_url)
    planned = sum(len(p.clips) for p in make_plans([f"load-{i + 1:03d}" for i in range(20)], s.seconds,
                                                    s.event_every_s, s.seed))
    assert r["device_errors"] == {}
    assert r["events_on_devices"] == planned
    assert r["events_in_central"] == r["events_on_devices"] and r["equal"] is True
    assert r["duplicates_in_central"] == 0 and r["lost"] == 0 and r["extra_in_central"] == 0
    assert r["health_in_central"] == r["health_on_devices"] > 0
    assert r["drained"] and r["devices_drained"] == 20
    assert r["device_connects_total"] >= 2 * 20  # every device lost the broker and came back
    assert r["latency_ms"]["events_logged_while_broker_down"] > 0  # the kill was in the middle of the stream
