"""MQTT sink: sends the device's outbox (``runtime.fleet.outbox``) to a broker with paho-mqtt 2.x.

Topics (``<prefix>`` defaults to ``fieldear``):

- ``<prefix>/<device_id>/events``  one JSON message per ``events`` row, QoS 1
- ``<prefix>/<device_id>/health``  one JSON message per ``health`` row, QoS 1
- ``<prefix>/<device_id>/status``  ``online`` on connect, ``offline`` as last will and on a clean stop (retained)
- ``homeassistant/sensor/fieldear_<device>_last_event/config``  optional Home Assistant discovery (retained)

Every message carries a stable id (``"<device_id>:<event_id>"``). A row is marked sent only after the
broker's PUBACK; rows of one stream are published in id order with at most ``window`` in flight; after a
lost connection the sender reconnects with exponential backoff (jittered) and resends from the cursor, so
the collector may see a message twice and stores it once.

``MqttSink`` runs in a thread of its own with its own SQLite connection and drives the paho client itself
(``client.loop``), so the listener's audio loop never waits for the network; ``send_pending`` is the one-shot
variant (``fieldear outbox send``). paho is imported lazily: it is the optional extra ``fieldear[mqtt]``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from runtime.config import MqttConfig
from runtime.errors import ConfigError, FieldearError
from runtime.fleet import outbox

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DEFAULT_PREFIX = "fieldear"
ONLINE, OFFLINE = "online", "offline"


class BrokerUnavailable(FieldearError):
    """The broker cannot be reached or refused the connection."""


class _ConnectionLost(Exception):
    pass


def import_paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise FieldearError(
            "MQTT needs paho-mqtt, which is not installed", hint="pip install 'fieldear[mqtt]'"
        ) from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise FieldearError("paho-mqtt 2.x is required (found 1.x)", hint="pip install -U 'paho-mqtt>=2.0'")
    return mqtt


def check_device_id(device_id: str | None) -> str:
    if (
        not isinstance(device_id, str)
        or not device_id.strip()
        or len(device_id) > 64
        or any(c.isspace() or c in "/+#" for c in device_id)
    ):
        raise ConfigError(
            f"device id {device_id!r} cannot be used in MQTT topics",
            hint="a short id without spaces, '/', '+' or '#' (set --device-id or [device] id)",
        )
    return device_id


def parse_hostport(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``"host"``, ``"host:port"`` or ``"[v6addr]:port"`` -> (host, port)."""
    text = (text or "").strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ConfigError(f"no broker host in {text!r}", hint="give HOST:PORT, e.g. broker.local:1883")
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(f"bad broker port in {text!r}", hint="give HOST:PORT with a port 1-65535")
    return host, port


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int = DEFAULT_PORT
    tls: bool = False
    ca_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    topic_prefix: str = DEFAULT_PREFIX
    client_id: str | None = None
    keepalive_s: int = 30
    connect_timeout_s: float = 5.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_config(cls, section: MqttConfig | None, hostport: str | None = None) -> "MqttSettings":
        """From the config's ``[mqtt]`` section (validated when the config was loaded; None: no config);
        ``hostport`` (``--mqtt HOST:PORT``) overrides host and port."""
        section = section or MqttConfig()
        host, port = section.host, section.effective_port
        if hostport:
            host, port = parse_hostport(hostport, DEFAULT_TLS_PORT if section.tls else DEFAULT_PORT)
        if not host:
            raise ConfigError("no MQTT broker configured", hint="give --mqtt HOST:PORT or set [mqtt] host")
        return cls(host=host, port=port, tls=section.tls, ca_file=str(section.ca_file) if section.ca_file else None,
                   username=section.username, password=section.read_password(), topic_prefix=section.topic_prefix,
                   client_id=section.client_id)


class Backoff:
    """Waits between connection attempts: jittered, doubling from ``low`` to ``high``; the first failure in a
    row is a warning, the next ones debug lines, and the reconnect after failures is said once."""

    def __init__(self, low: float, high: float, rng: random.Random, address: str):
        self.low, self.high, self.rng, self.address = low, high, rng, address
        self.delay, self.failures = low, 0

    def _jitter(self, seconds: float) -> float:
        return seconds * self.rng.uniform(0.8, 1.2)

    def wait(self, stop: threading.Event) -> None:
        """After a failed attempt: wait the current delay, then double it."""
        stop.wait(self._jitter(self.delay))
        self.delay = min(self.delay * 2, self.high)

    def failed(self, exc: Exception, stop: threading.Event) -> None:
        self.failures += 1
        (log.warning if self.failures == 1 else log.debug)("%s; retrying (attempt %d)", exc, self.failures)
        self.wait(stop)

    def connected(self) -> None:
        if self.failures:
            log.info("connected to MQTT broker %s after %d failed attempts", self.address, self.failures)
        self.delay, self.failures = self.low, 0

    def lost(self, stop: threading.Event) -> None:
        """After a lost connection: a short pause before the first new attempt."""
        stop.wait(self._jitter(self.low))


@dataclass(frozen=True)
class Topics:
    prefix: str
    device_id: str

    @property
    def events(self) -> str:
        return f"{self.prefix}/{self.device_id}/events"

    @property
    def health(self) -> str:
        return f"{self.prefix}/{self.device_id}/health"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.device_id}/status"

    @property
    def reviews(self) -> str:
        return f"{self.prefix}/{self.device_id}/reviews"

    def of(self, stream: str) -> str:
        return {"events": self.events, "health": self.health, "reviews": self.reviews}[stream]


def discovery_messages(topics: Topics) -> list[tuple[str, str]]:
    """Home Assistant MQTT discovery: one sensor whose state is the last event's label (retained config)."""
    object_id = re.sub(r"[^A-Za-z0-9_]", "_", f"fieldear_{topics.device_id}_last_event")
    config = {
        "name": "Last sound event",
        "unique_id": object_id,
        "object_id": object_id,
        "state_topic": topics.events,
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": topics.events,
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "icon": "mdi:ear-hearing",
        "device": {
            "identifiers": [f"fieldear_{topics.device_id}"],
            "name": f"fieldear {topics.device_id}",
            "manufacturer": "fieldear",
            "model": "sound classifier",
        },
    }
    return [(f"homeassistant/sensor/{object_id}/config", json.dumps(config, sort_keys=True))]


def new_client(settings: MqttSettings, client_id: str, clean_session: bool = True):
    mqtt = import_paho()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311
    )
    client.connect_timeout = settings.connect_timeout_s
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        try:
            client.tls_set(ca_certs=settings.ca_file or None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot set up TLS with ca_file {settings.ca_file}: {exc}") from None
    return client


def connect_client(client, settings: MqttSettings, timeout_s: float | None = None) -> None:
    """Connect and wait for the broker's CONNACK, driving the client from this thread."""
    mqtt = import_paho()
    answer = {}

    def on_connect(_client, _userdata, _flags, reason_code, _properties):
        answer["rc"] = reason_code

    client.on_connect = on_connect
    timeout_s = settings.connect_timeout_s if timeout_s is None else timeout_s
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as exc:  # refused, unreachable, DNS, TLS handshake
        raise BrokerUnavailable(
            f"cannot reach MQTT broker {settings.address}: {exc}", hint="is the broker running and reachable?"
        ) from None
    deadline = time.monotonic() + timeout_s
    while "rc" not in answer:
        rc = client.loop(0.05)
        if "rc" in answer:
            break
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(f"MQTT broker {settings.address} dropped the connection: {mqtt.error_string(rc)}")
        if time.monotonic() > deadline:
            drop_client(client)
            raise BrokerUnavailable(f"MQTT broker {settings.address} did not answer within {timeout_s:.0f} s")
    if answer["rc"].is_failure:
        drop_client(client)
        raise BrokerUnavailable(
            f"MQTT broker {settings.address} refused the connection: {answer['rc']}",
            hint="check [mqtt] username/password and the broker's ACL",
        )


def drop_client(client) -> None:
    try:
        client.disconnect()
    except Exception:  # noqa: BLE001 - closing a broken client, nothing left to report
        log.debug("closing MQTT client", exc_info=True)


def close_client(client, settings: MqttSettings, status_topic: str | None, timeout_s: float = 2.0) -> None:
    """Clean close: publish ``offline`` (retained) if asked, wait briefly for its ack, DISCONNECT."""
    mqtt = import_paho()
    try:
        if status_topic:
            info = client.publish(status_topic, OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + timeout_s
            while info.rc == mqtt.MQTT_ERR_SUCCESS and not info.is_published() and time.monotonic() < deadline:
                if client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
        client.disconnect()
        client.loop(0.05)
    except Exception:  # noqa: BLE001 - best effort on the way out
        log.debug("closing MQTT client", exc_info=True)


class OutboxSender:
    """Publishes a device log's pending rows over one connected client; the caller drives ``step()``.

    At most ``window`` messages per stream are in flight; the cursor moves to the highest id whose PUBACK
    came back with all earlier ones. A message unacknowledged for ``ack_timeout_s`` counts as a lost
    connection (the caller reconnects and everything after the cursor is sent again).
    """

    def __init__(self, conn, client, topics: Topics, clock=time.time, window: int = 20, ack_timeout_s: float = 30.0):
        self.conn = conn
        self.client = client
        self.topics = topics
        self.clock = clock
        self.window = max(1, int(window))
        self.ack_timeout_s = ack_timeout_s
        self.inflight = {s: deque() for s in outbox.STREAMS}  # (row_id, info, monotonic sent)
        self.acked = {s: 0 for s in outbox.STREAMS}
        self.published = {s: 0 for s in outbox.STREAMS}

    @property
    def busy(self) -> bool:
        return any(self.inflight.values())

    def step(self) -> None:
        for stream in outbox.STREAMS:
            self._collect_acks(stream)
            self._fill(stream)

    def _collect_acks(self, stream: str) -> None:
        queue = self.inflight[stream]
        last = None
        try:
            while queue and queue[0][1].is_published():
                last = queue.popleft()[0]
                self.acked[stream] += 1
        except (RuntimeError, ValueError) as exc:  # paho: publish failed (not connected, queue full)
            raise _ConnectionLost(f"publish failed: {exc}") from None
        if last is not None:
            outbox.mark_sent(self.conn, stream, last)
        if queue and time.monotonic() - queue[0][2] > self.ack_timeout_s:
            raise _ConnectionLost(f"no PUBACK for {stream} row {queue[0][0]} within {self.ack_timeout_s:.0f} s")

    def _fill(self, stream: str) -> None:
        mqtt = import_paho()
        queue = self.inflight[stream]
        room = self.window - len(queue)
        if room <= 0:
            return
        after = queue[-1][0] if queue else None
        make = outbox.PAYLOADS[stream]
        for row in outbox.pending(self.conn, stream, after=after, limit=room):
            payload = json.dumps(make(row, self.topics.device_id, self.clock()), default=str)
            info = self.client.publish(self.topics.of(stream), payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise _ConnectionLost(f"publish refused: {mqtt.error_string(info.rc)}")
            queue.append((row["id"], info, time.monotonic()))
            self.published[stream] += 1


@dataclass
class SendResult:
    acked: dict[str, int]
    status: outbox.OutboxStatus


def send_pending(
    db_path: str | Path,
    settings: MqttSettings,
    device_id: str,
    timeout_s: float = 30.0,
    clock=time.time,
    window: int = 20,
) -> SendResult:
    """One shot: connect, send everything pending, wait for the acks (at most ``timeout_s``), disconnect.

    Raises ``BrokerUnavailable`` if the broker cannot be reached; rows not acknowledged stay pending.
    Does not publish the device's online/offline status (a running listener owns that).
    """
    mqtt = import_paho()
    topics = Topics(settings.topic_prefix, check_device_id(device_id))
    base = settings.client_id or device_id
    client = new_client(settings, client_id=f"{base}-send-{random.getrandbits(32):08x}")
    deadline = time.monotonic() + timeout_s
    conn = outbox.connect(db_path)
    try:
        connect_client(client, settings, timeout_s=min(timeout_s, settings.connect_timeout_s))
        sender = OutboxSender(conn, client, topics, clock=clock, window=window, ack_timeout_s=timeout_s)
        try:
            while time.monotonic() < deadline:
                sender.step()
                if not sender.busy:
                    break
                rc = client.loop(0.05)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    log.warning("connection to %s lost: %s", settings.address, mqtt.error_string(rc))
                    break
        except _ConnectionLost as exc:
            log.warning("sending stopped: %s", exc)
        close_client(client, settings, status_topic=None)
        return SendResult(acked=dict(sender.acked), status=outbox.status(conn))
    finally:
        conn.close()


class MqttSink:
    """Background sender for a running listener: own thread, own DB connection, reconnects with backoff.

    ``notify()`` wakes it (new rows); ``drain(timeout)`` waits until nothing is pending; ``stop()`` closes
    cleanly (``offline`` status). Publishes ``online`` (retained) on every connect, with ``offline`` as the
    last will, and the Home Assistant discovery config when ``ha_discovery`` is set.
    """

    def __init__(
        self,
        db_path: str | Path,
        settings: MqttSettings,
        device_id: str,
        *,
        clock=time.time,
        rng: random.Random | None = None,
        window: int = 20,
        ha_discovery: bool = False,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        idle_poll_s: float = 0.5,
        ack_timeout_s: float = 30.0,
    ):
        import_paho()  # fail early, in the caller's thread, if the extra is missing
        self.db_path = Path(db_path)
        self.settings = settings
        self.topics = Topics(settings.topic_prefix, check_device_id(device_id))
        self.client_id = settings.client_id or device_id
        self.clock = clock
        self.rng = rng or random.Random()
        self.window = window
        self.ha_discovery = ha_discovery
        self.backoff_s = backoff_s
        self.idle_poll_s = idle_poll_s
        self.ack_timeout_s = ack_timeout_s
        self.connected = threading.Event()
        self.connects = 0
        self.acked = {s: 0 for s in outbox.STREAMS}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- caller side ----

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"mqtt-sink-{self.topics.device_id}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def outbox_status(self) -> outbox.OutboxStatus:
        conn = outbox.connect(self.db_path)
        try:
            return outbox.status(conn)
        finally:
            conn.close()

    def drain(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until every row is acknowledged; True if the outbox is empty."""
        deadline = time.monotonic() + timeout_s
        conn = outbox.connect(self.db_path)
        try:
            while True:
                if outbox.status(conn).total_pending == 0:
                    return True
                if time.monotonic() >= deadline:
                    return False
                self.notify()
                time.sleep(0.05)
        finally:
            conn.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("MQTT sender thread did not stop within %.0f s", timeout_s)
            self._thread = None

    # ---- sender thread ----

    def _run(self) -> None:
        conn = outbox.connect(self.db_path)
        try:
            self._reconnect_loop(conn)
        except Exception:  # noqa: BLE001 - a sender bug must not take the listener down; say it loudly
            log.exception("MQTT sender thread failed; events stay in the outbox")
        finally:
            conn.close()

    def _reconnect_loop(self, conn) -> None:
        backoff = Backoff(*self.backoff_s, self.rng, self.settings.address)
        while not self._stop.is_set():
            try:
                client = self._open()
            except BrokerUnavailable as exc:
                backoff.failed(exc, self._stop)
                continue
            backoff.connected()
            self.connects += 1
            self.connected.set()
            try:
                self._serve(conn, client)
            except _ConnectionLost as exc:
                log.warning("MQTT connection to %s lost (%s); events stay in the outbox", self.settings.address, exc)
                drop_client(client)
                backoff.lost(self._stop)
                continue
            finally:
                self.connected.clear()
            close_client(client, self.settings, self.topics.status)

    def _open(self):
        mqtt = import_paho()
        client = new_client(self.settings, self.client_id)
        client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        connect_client(client, self.settings)
        client.publish(self.topics.status, ONLINE, qos=1, retain=True)
        if self.ha_discovery:
            for topic, payload in discovery_messages(self.topics):
                client.publish(topic, payload, qos=1, retain=True)
        if client.loop(0) != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(f"MQTT broker {self.settings.address} dropped the connection")
        return client

    def _serve(self, conn, client) -> None:
        mqtt = import_paho()
        sender = OutboxSender(conn, client, self.topics, self.clock, self.window, self.ack_timeout_s)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                sender.step()
                if sender.busy:
                    rc = client.loop(0.02)
                else:
                    self._wake.wait(self.idle_poll_s)
                    rc = client.loop(0)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    raise _ConnectionLost(mqtt.error_string(rc))
        finally:
            for s in outbox.STREAMS:
                self.acked[s] += sender.acked[s]
