"""The MQTT sink against a real Mosquitto: topics, payloads, QoS, status and last will, auth, discovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runtime.errors import ConfigError
from runtime.fleet.mqtt import MqttSettings, check_device_id, parse_hostport
from tests.fleet.broker import (
    Broker,
    CollectorThread,
    add_event,
    add_health,
    make_device_db,
    require_mosquitto,
    wait_until,
)

mqtt = pytest.importorskip("paho.mqtt.client")
ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A plain paho subscriber that records every message (topic, payload, qos, retain)."""

    def __init__(self, address: str, topic: str):
        host, port = parse_hostport(address)
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"recorder-{os.getpid()}")
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        assert self.subscribed.wait(10), "recorder did not subscribe"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def on(self, topic: str) -> list[tuple[str, bytes, int, bool]]:
        with self.lock:
            return [m for m in self.messages if m[0] == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_parse_hostport_and_device_ids():
    assert parse_hostport("broker.local:1884") == ("broker.local", 1884)
    assert parse_hostport("broker.local") == ("broker.local", 1883)
    assert parse_hostport("broker.local", 8883) == ("broker.local", 8883)
    assert parse_hostport("[::1]:1885") == ("::1", 1885)
    for bad in ("", ":1883", "host:0", "host:x", "host:70000"):
        with pytest.raises(ConfigError):
            parse_hostport(bad)
    assert check_device_id("field-03") == "field-03"
    for bad in ("", "a/b", "a+b", "a#", "a b", "x" * 65, None):
        with pytest.raises(ConfigError):
            check_device_id(bad)


def test_settings_from_the_config_file(tmp_path):
    from runtime.config import load_config

    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "fieldear.toml").write_text(
        '[device]\nid = "field-03"\n[mqtt]\nhost = "broker.local"\nusername = "dev"\npassword_file = "secret"\n'
        'topic_prefix = "farm/sound"\n'
    )
    cfg = load_config(tmp_path / "fieldear.toml")
    s = MqttSettings.from_config(cfg.mqtt)
    assert (s.host, s.port, s.username, s.password, s.topic_prefix) == ("broker.local", 1883, "dev", "s3cret", "farm/sound")
    assert "s3cret" not in repr(s)
    s2 = MqttSettings.from_config(cfg.mqtt, "10.0.0.5:1999")  # --mqtt overrides host and port only
    assert (s2.host, s2.port, s2.username) == ("10.0.0.5", 1999, "dev")
    with pytest.raises(ConfigError, match="no MQTT broker"):
        MqttSettings.from_config(None)


def test_messages_on_the_wire(tmp_path, broker):
    """Events and health as JSON on <prefix>/<device>/events|health, QoS 1, in id order, stable ids;
    status online (retained) while connected and offline (retained) after a clean stop; discovery retained."""
    from runtime.fleet import outbox
    from runtime.fleet.mqtt import MqttSink

    rec = Recorder(broker.address, "#")
    db = make_device_db(tmp_path / "dev.db")
    ids = [add_event(db, "field-03", label, float(i)) for i, label in enumerate(["dog", "rain", "dog"] * 10)]
    hid = add_health(db, "field-03", {"rss_mb": 40.0})
    gen = outbox.generation(outbox.connect(tmp_path / "dev.db"))
    sink = MqttSink(tmp_path / "dev.db", MqttSettings.from_config(None, broker.address), "field-03",
                    clock=lambda: 1234.5, window=4, ha_discovery=True)
    with CollectorThread(tmp_path / "central.db", broker.address):
        sink.start()
        try:
            assert sink.drain(10)  # the collector acknowledged everything
            assert wait_until(lambda: len(rec.on("fieldear/field-03/events")) == 30, 5)
        finally:
            sink.stop()
    assert wait_until(lambda: len(rec.on("fieldear/field-03/status")) == 2, 5)
    rec.close()

    events = [json.loads(m[1]) for m in rec.on("fieldear/field-03/events")]
    assert [e["event_id"] for e in events] == ids  # in order
    assert [e["id"] for e in events] == [f"field-03:{gen}:{i}" for i in ids]
    assert {e["generation"] for e in events} == {gen} and len(gen) == 32
    assert events[1]["label"] == "rain" and events[1]["sent_ts"] == 1234.5 and events[1]["model_sha"] == "sha-test"
    assert events[0]["backlog"] == 30  # what was not acknowledged when it was sent
    assert {m[2] for m in rec.on("fieldear/field-03/events")} == {1}
    health = [json.loads(m[1]) for m in rec.on("fieldear/field-03/health")]
    assert health == [{"id": f"field-03:{gen}:health:{hid}", "device_id": "field-03", "generation": gen,
                       "health_id": hid, "t_utc": "2026-05-01T04:12:07.250Z", "health": {"rss_mb": 40.0},
                       "sent_ts": 1234.5, "backlog": 1}]
    # the collector's acknowledgements, QoS 1, on the device's ack topic
    acks = [json.loads(m[1]) for m in rec.on("fieldear/field-03/ack")]
    assert {m[2] for m in rec.on("fieldear/field-03/ack")} == {1} and {a["generation"] for a in acks} == {gen}
    assert sorted(i for a in acks for i in a.get("events", [])) == ids
    assert [i for a in acks for i in a.get("health", [])] == [hid]
    assert [m[1] for m in rec.on("fieldear/field-03/status")] == [b"online", b"offline"]
    disc = [m for m in rec.messages if m[0].startswith("homeassistant/sensor/")]
    assert len(disc) == 1 and disc[0][0] == "homeassistant/sensor/fieldear_field_03_last_event/config"
    config = json.loads(disc[0][1])
    assert config["state_topic"] == "fieldear/field-03/events" and config["value_template"] == "{{ value_json.label }}"
    assert config["availability_topic"] == "fieldear/field-03/status"

    # retained: a late subscriber sees the last status and the discovery config
    late = Recorder(broker.address, "#")
    assert wait_until(lambda: len([m for m in late.messages if m[3]]) >= 2, 5)
    retained = {m[0]: m[1] for m in late.messages if m[3]}
    late.close()
    assert retained["fieldear/field-03/status"] == b"offline"
    assert "homeassistant/sensor/fieldear_field_03_last_event/config" in retained


def test_no_discovery_without_the_flag(tmp_path, broker):
    from runtime.fleet.mqtt import MqttSink

    rec = Recorder(broker.address, "homeassistant/#")
    make_device_db(tmp_path / "dev.db")
    sink = MqttSink(tmp_path / "dev.db", MqttSettings.from_config(None, broker.address), "d2")
    sink.start()
    assert sink.connected.wait(10)
    time.sleep(0.3)
    sink.stop()
    rec.close()
    assert rec.messages == []


DEVICE_SCRIPT = """
import sys, time
from runtime.fleet.mqtt import MqttSettings, MqttSink
sink = MqttSink(sys.argv[1], MqttSettings.from_config(None, sys.argv[2]), sys.argv[3], backoff_s=(0.1, 0.5))
sink.start()
sink.connected.wait(10)
print("connected" if sink.connected.is_set() else "not connected", flush=True)
time.sleep(60)
"""


def test_last_will_seen_by_the_collector_when_a_device_dies(tmp_path, broker):
    make_device_db(tmp_path / "dev.db").close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with CollectorThread(tmp_path / "central.db", broker.address) as col:
        proc = subprocess.Popen([sys.executable, "-c", DEVICE_SCRIPT, str(tmp_path / "dev.db"), broker.address, "dying-1"],
                                stdout=subprocess.PIPE, env=env, cwd=ROOT)
        try:
            assert proc.stdout.readline().strip() == b"connected"
            assert wait_until(lambda: _status(tmp_path / "central.db", "dying-1") == "online", 5)
            proc.send_signal(signal.SIGKILL)  # no clean disconnect: the broker publishes the will
            proc.wait(10)
            assert wait_until(lambda: _status(tmp_path / "central.db", "dying-1") == "offline", 10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
        assert col.stats.status >= 2


def _status(db: Path, device: str):
    import sqlite3

    conn = sqlite3.connect(str(db), timeout=10)
    try:
        row = conn.execute("SELECT state FROM status WHERE device_id = ?", (device,)).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


def test_username_and_password(tmp_path):
    require_mosquitto()
    from runtime.fleet.mqtt import BrokerUnavailable, send_pending

    db = make_device_db(tmp_path / "dev.db")
    add_event(db, "d-auth", "dog", 0.0)
    with Broker(tmp_path / "broker", users={"dev": "right"}) as b:
        host, port = parse_hostport(b.address)
        wrong = MqttSettings(host=host, port=port, username="dev", password="wrong")
        with pytest.raises(BrokerUnavailable, match="refused the connection"):
            send_pending(tmp_path / "dev.db", wrong, "d-auth", timeout_s=5)
        anonymous = MqttSettings(host=host, port=port)
        with pytest.raises(BrokerUnavailable, match="refused the connection"):
            send_pending(tmp_path / "dev.db", anonymous, "d-auth", timeout_s=5)
        right = MqttSettings(host=host, port=port, username="dev", password="right")
        result = send_pending(tmp_path / "dev.db", right, "d-auth", timeout_s=1.5)
    # the broker took it; no collector: not acknowledged, it stays pending
    assert result.published["events"] >= 1 and result.acked["events"] == 0 and result.status.total_pending == 1


# ---- fieldear listen --mqtt: the real listener with the OutboxHook ----


@pytest.fixture(scope="module")
def listen_bundle(tmp_path_factory):
    pytest.importorskip("tensorflow")  # the test head is made with TensorFlow
    from tests.listen.support import make_bundle

    return make_bundle(tmp_path_factory.mktemp("fleet_bundle") / "b", ["a", "b", "c"], seed=3,
                       thresholds={"a": 0.4, "b": 0.4, "c": 0.4})


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    from tests.field.support import forest_recording

    return forest_recording(tmp_path_factory.mktemp("fleet_forest") / "forest.wav", n_files=6)


def _listen(tmp_path, bundle, recording, address, *extra, timeout=180):
    cmd = [sys.executable, "-m", "runtime.cli", "listen", "--model", str(bundle), "--file", str(recording),
           "--db", str(tmp_path / "dev.db"), "--device-id", "pi-7", "--mqtt", address, "--no-windows", "--json", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.train
@pytest.mark.slow
def test_listen_file_sends_its_events_and_drains_before_exit(tmp_path, broker, listen_bundle, forest):
    from tests.fleet.broker import central_events, device_events

    with CollectorThread(tmp_path / "central.db", broker.address) as col:
        r = _listen(tmp_path, listen_bundle, forest, broker.address)
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout[r.stdout.index("{"):])
        assert summary["events"] >= 1 and summary["hook_errors"] == 0
        # drained before exit: everything is already acknowledged by the broker
        import sqlite3
        conn = sqlite3.connect(tmp_path / "dev.db")
        assert conn.execute("SELECT last_id FROM outbox_state WHERE stream = 'events'").fetchone()[0] == \
            conn.execute("SELECT MAX(id) FROM events").fetchone()[0]
        conn.close()
        assert wait_until(lambda: col.stats.events == summary["events"], 10)
        assert wait_until(lambda: _status(tmp_path / "central.db", "pi-7") == "offline", 10)
    rows = device_events(tmp_path / "dev.db")
    assert [r[0] for r in rows] == ["pi-7"] * len(rows)
    assert central_events(tmp_path / "central.db") == rows


@pytest.mark.train
@pytest.mark.slow
def test_listen_keeps_classifying_with_the_broker_down(tmp_path, listen_bundle, forest, capsys):
    require_mosquitto()
    from runtime.cli.main import main as cli_main
    from tests.fleet.broker import central_events, device_events

    b = Broker(tmp_path / "broker")  # not started
    t0 = time.monotonic()
    r = _listen(tmp_path, listen_bundle, forest, b.address, "--drain-timeout", "2")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 120
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["events"] >= 1 and summary["blocks"] > 0
    assert "outbox not drained within 2.0 s" in r.stderr
    with b, CollectorThread(tmp_path / "central.db", b.address) as col:
        assert cli_main(["outbox", "send", "--db", str(tmp_path / "dev.db"), "--mqtt", b.address]) == 0
        assert f"sent {summary['events']} events" in capsys.readouterr().out
        assert wait_until(lambda: col.stats.events == summary["events"], 10)
    assert central_events(tmp_path / "central.db") == device_events(tmp_path / "dev.db")


def test_tls_with_the_configured_ca(tmp_path):
    require_mosquitto()
    from runtime.fleet.mqtt import BrokerUnavailable, send_pending
    from tests.fleet.broker import make_test_certs

    certs = make_test_certs(tmp_path / "certs")
    if certs is None:
        pytest.skip("openssl is not installed")
    db = make_device_db(tmp_path / "dev.db")
    add_event(db, "d-tls", "dog", 0.0)
    with Broker(tmp_path / "broker", tls=certs) as b:
        host, port = parse_hostport(b.address)
        with pytest.raises(BrokerUnavailable):  # the system CAs do not know the test CA
            send_pending(tmp_path / "dev.db", MqttSettings(host=host, port=port, tls=True), "d-tls", timeout_s=5)
        with pytest.raises(BrokerUnavailable):  # plain MQTT to a TLS listener
            send_pending(tmp_path / "dev.db", MqttSettings(host=host, port=port), "d-tls", timeout_s=3)
        ok = MqttSettings(host=host, port=port, tls=True, ca_file=str(certs[0]))
        result = send_pending(tmp_path / "dev.db", ok, "d-tls", timeout_s=1.5)
    assert result.published["events"] >= 1 and result.acked["events"] == 0 and result.status.total_pending == 1


def test_fleet_hooks_from_the_config_or_the_command_line(tmp_path):
    from runtime.config import load_config
    from runtime.fleet.outbox import OutboxHook
    from runtime.listen.program import ListenOptions, fleet_hooks

    (tmp_path / "with.toml").write_text(f'[device]\nid = "pi-9"\n[store]\ndb = "{tmp_path / "d.db"}"\n'
                                        '[mqtt]\nhost = "broker.lan"\nport = 1999\n')
    (tmp_path / "without.toml").write_text('[device]\nid = "pi-9"\n')
    replay = ListenOptions(file=Path("rec.wav"))
    [hook] = fleet_hooks(load_config(tmp_path / "with.toml"), replay)
    assert isinstance(hook, OutboxHook) and hook.drain_timeout_s == 10.0  # --file: drain 10 s by default
    assert (hook.sink.settings.address, hook.sink.topics.events) == ("broker.lan:1999", "fieldear/pi-9/events")
    assert fleet_hooks(load_config(tmp_path / "without.toml"), replay) == []  # no broker: no hook
    mic = ListenOptions(mqtt="10.0.0.2:1883", ha_discovery=True)
    [hook] = fleet_hooks(load_config(tmp_path / "without.toml"), mic)
    assert hook.drain_timeout_s == 0.0 and hook.sink.settings.address == "10.0.0.2:1883" and hook.sink.ha_discovery
