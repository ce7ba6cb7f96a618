"""MQTT sink: sends the device's outbox (``runtime.fleet.outbox``) to a broker with paho-mqtt 2.x.

Topics (``<prefix>`` defaults to ``fieldear``):

- ``<prefix>/<device_id>/events``  one JSON message per ``events`` row, QoS 1
- ``<prefix>/<device_id>/health``  one JSON message per ``health`` row, QoS 1
- ``<prefix>/<device_id>/reviews`` one JSON message per ``reviews`` row, QoS 1
- ``<prefix>/<device_id>/ack``     subscribed (QoS 1): the collector's acknowledgements of stored rows
- ``<prefix>/<device_id>/status``  ``online`` on connect, ``offline`` as last will and on a clean stop (retained)
- ``homeassistant/sensor/fieldear_<device>_last_event/config``  optional Home Assistant discovery (retained)

Every message carries a stable, globally unique id (``"<device_id>:<generation>:<event_id>"``, the
generation being the log's). "Sent" means the broker's PUBACK came back, which only says the broker had
it in memory; "acknowledged" means the collector committed it to the central database and said so on
``<prefix>/<device_id>/ack`` (``{"generation": G, "events": [ids], "health": [...], "reviews": [...]}``).
The durable cursor moves only on acknowledgements, to the highest id acknowledged with all earlier ones.
Rows of one stream are published in id order with at most ``window`` unacknowledged; when the oldest of
them has waited ``ack_timeout_s`` (by the injected ``timer``), every unacknowledged one is published again,
in order. After a lost connection the sender reconnects with exponential backoff (jittered) and resends
from the cursor, so the collector may see a message twice and stores it once (and acknowledges it again).

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
    ack_timeout_s: float = 30.0  # re-send what the collector has not acknowledged after this long

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
                   client_id=section.client_id, ack_timeout_s=float(section.ack_timeout_s))


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

    @property
    def ack(self) -> str:
        return f"{self.prefix}/{self.device_id}/ack"

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
    _no_delay(client)
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


def _no_delay(client) -> None:
    """TCP_NODELAY: an ack is a small packet answering a small packet; Nagle's algorithm with delayed ACKs would
    hold each for up to ~40 ms, which makes the end-to-end acknowledgement round trip slow."""
    import socket

    try:
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError, ValueError):
        log.debug("cannot set TCP_NODELAY", exc_info=True)


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


def subscribe_acks(client, settings: MqttSettings, topic: str) -> None:
    """Subscribe (QoS 1) to the device's ack topic and wait for the SUBACK: acks of what is published next
    must not be missed (they would only cost a resend, but a slow one)."""
    mqtt = import_paho()
    granted = {}
    client.on_subscribe = lambda _c, _u, mid, codes, _p: granted.setdefault(mid, codes)
    rc, mid = client.subscribe(topic, qos=1)
    if rc != mqtt.MQTT_ERR_SUCCESS:
        raise BrokerUnavailable(f"cannot subscribe to {topic} on {settings.address}: {mqtt.error_string(rc)}")
    deadline = time.monotonic() + settings.connect_timeout_s
    while mid not in granted:
        if client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS or time.monotonic() > deadline:
            drop_client(client)
            raise BrokerUnavailable(f"MQTT broker {settings.address} did not confirm the subscription to {topic}")
    if any(code.is_failure for code in granted[mid]):
        drop_client(client)
        raise BrokerUnavailable(f"MQTT broker {settings.address} refused the subscription to {topic}",
                                hint="check the broker's ACL: the device must read <prefix>/<device>/ack")


class OutboxSender:
    """Publishes a device log's pending rows over one connected client; the caller drives ``step()`` and
    passes the collector's ack messages to ``on_ack()``.

    At most ``window`` messages per stream wait for the collector's acknowledgement; the cursor moves to the
    highest id acknowledged with all earlier ones. When the oldest unacknowledged message has waited
    ``ack_timeout_s`` (``timer``: monotonic seconds, injectable), all unacknowledged ones are published again,
    in id order. ``clock`` (unix seconds) stamps ``sent_ts``.
    """

    def __init__(self, conn, client, topics: Topics, clock=time.time, window: int = 50, ack_timeout_s: float = 30.0,
                 timer=time.monotonic, generation: str | None = None):
        self.conn = conn
        self.client = client
        self.topics = topics
        self.clock = clock
        self.timer = timer
        self.window = max(1, int(window))
        self.ack_timeout_s = float(ack_timeout_s)
        self.generation = generation or outbox.generation(conn)
        # stream -> {row_id: monotonic time of the last publish}, in id order
        self.inflight: dict[str, dict[int, float]] = {s: {} for s in outbox.STREAMS}
        self.confirmed: dict[str, set[int]] = {s: set() for s in outbox.STREAMS}  # acked, not yet in the cursor
        self.acked = {s: 0 for s in outbox.STREAMS}  # rows the collector acknowledged (cursor moved past them)
        self.published = {s: 0 for s in outbox.STREAMS}  # publish calls, re-sends included
        self.resent = {s: 0 for s in outbox.STREAMS}
        self.acks_ignored = 0  # ack messages for another log generation, or unreadable

    @property
    def busy(self) -> bool:
        return any(self.inflight.values())

    def step(self) -> None:
        for stream in outbox.STREAMS:
            self._advance(stream)
            self._resend_expired(stream)
            self._fill(stream)

    def on_ack(self, payload: bytes | str) -> int:
        """One ack message from the collector; returns how many in-flight rows it confirmed."""
        try:
            msg = json.loads(payload)
            if not isinstance(msg, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            self.acks_ignored += 1
            log.warning("ignored an unreadable ack message on %s", self.topics.ack)
            return 0
        if msg.get("generation") != self.generation:
            self.acks_ignored += 1  # for an older log of this device (or another one using the same id)
            log.debug("ignored an ack for log generation %s (this log: %s)", msg.get("generation"), self.generation)
            return 0
        n = 0
        for stream in outbox.STREAMS:
            ids = msg.get(stream)
            if not isinstance(ids, list):
                continue
            inflight, confirmed = self.inflight[stream], self.confirmed[stream]
            for row_id in ids:
                if isinstance(row_id, int) and row_id in inflight and row_id not in confirmed:
                    confirmed.add(row_id)
                    n += 1
        return n

    def _advance(self, stream: str) -> None:
        inflight, confirmed = self.inflight[stream], self.confirmed[stream]
        last = None
        while inflight:
            first = next(iter(inflight))
            if first not in confirmed:
                break
            del inflight[first]
            confirmed.discard(first)
            last = first
            self.acked[stream] += 1
        if last is not None:
            outbox.mark_acked(self.conn, stream, last)

    def _resend_expired(self, stream: str) -> None:
        inflight, confirmed = self.inflight[stream], self.confirmed[stream]
        if not inflight:
            return
        now = self.timer()
        first = next(iter(inflight))
        if now - inflight[first] < self.ack_timeout_s:
            return
        todo = [i for i in inflight if i not in confirmed]
        rows = {r["id"]: r for r in outbox.rows_by_id(self.conn, stream, todo)}
        log.info("no acknowledgement from the collector for %d %s row(s) (first id %d) within %.0f s: sending "
                 "them again", len(todo), stream, first, self.ack_timeout_s)
        backlog = outbox.count_pending(self.conn, stream)
        for row_id in todo:
            row = rows.get(row_id)
            if row is None:  # deleted meanwhile (retention): nothing left to send
                confirmed.add(row_id)
                continue
            self._publish(stream, row, backlog)
            inflight[row_id] = now
            self.resent[stream] += 1

    def _publish(self, stream: str, row: dict, backlog: int) -> None:
        mqtt = import_paho()
        msg = outbox.PAYLOADS[stream](row, self.topics.device_id, self.clock(), self.generation)
        msg["backlog"] = backlog
        info = self.client.publish(self.topics.of(stream), json.dumps(msg, default=str), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise _ConnectionLost(f"publish refused: {mqtt.error_string(info.rc)}")
        self.published[stream] += 1

    def _fill(self, stream: str) -> None:
        inflight = self.inflight[stream]
        room = self.window - len(inflight)
        if room <= 0:
            return
        after = next(reversed(inflight)) if inflight else None
        rows = outbox.pending(self.conn, stream, after=after, limit=room)
        if not rows:
            return
        backlog = outbox.count_pending(self.conn, stream)
        for row in rows:
            self._publish(stream, row, backlog)
            inflight[row["id"]] = self.timer()


@dataclass
class SendResult:
    acked: dict[str, int]  # rows the collector acknowledged (the cursor moved past them)
    status: outbox.OutboxStatus
    published: dict[str, int] = field(default_factory=dict)  # publish calls, re-sends included
    resent: dict[str, int] = field(default_factory=dict)


def send_pending(
    db_path: str | Path,
    settings: MqttSettings,
    device_id: str,
    timeout_s: float = 30.0,
    clock=time.time,
    window: int = 50,
    ack_timeout_s: float | None = None,
) -> SendResult:
    """One shot: connect, send everything pending, wait (at most ``timeout_s``) for the collector's acks,
    disconnect. Messages unacknowledged for ``ack_timeout_s`` (default: the settings', at most a third of
    ``timeout_s``) are sent again meanwhile.

    Raises ``BrokerUnavailable`` if the broker cannot be reached; rows not acknowledged by the collector stay
    pending (no collector running: everything stays pending, and is sent again next time).
    Does not publish the device's online/offline status (a running listener owns that).
    """
    mqtt = import_paho()
    topics = Topics(settings.topic_prefix, check_device_id(device_id))
    base = settings.client_id or device_id
    client = new_client(settings, client_id=f"{base}-send-{random.getrandbits(32):08x}")
    deadline = time.monotonic() + timeout_s
    if ack_timeout_s is None:
        ack_timeout_s = min(settings.ack_timeout_s, max(timeout_s / 3, 0.5))
    conn = outbox.connect(db_path)
    try:
        connect_client(client, settings, timeout_s=min(timeout_s, settings.connect_timeout_s))
        subscribe_acks(client, settings, topics.ack)
        sender = OutboxSender(conn, client, topics, clock=clock, window=window, ack_timeout_s=ack_timeout_s)
        client.on_message = lambda _c, _u, msg: sender.on_ack(msg.payload)
        try:
            while time.monotonic() < deadline:
                sender.step()
                if not sender.busy:
                    break
                rc = client.loop(0.05)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    log.warning("connection to %s lost: %s", settings.address, mqtt.error_string(rc))
                    break
            sender.step()  # the cursor up to the last ack received
        except _ConnectionLost as exc:
            log.warning("sending stopped: %s", exc)
        close_client(client, settings, status_topic=None)
        return SendResult(acked=dict(sender.acked), status=outbox.status(conn), published=dict(sender.published),
                          resent=dict(sender.resent))
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
        window: int = 50,
        ha_discovery: bool = False,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        idle_poll_s: float = 0.5,
        ack_timeout_s: float | None = None,
        timer=time.monotonic,
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
        self.ack_timeout_s = settings.ack_timeout_s if ack_timeout_s is None else float(ack_timeout_s)
        self.timer = timer
        self.connected = threading.Event()
        self.connects = 0
        self.acked = {s: 0 for s in outbox.STREAMS}
        self.published = {s: 0 for s in outbox.STREAMS}
        self.resent = {s: 0 for s in outbox.STREAMS}
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
        """Wait (at most ``timeout_s``) until the collector acknowledged every row; True if the outbox is empty."""
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
        subscribe_acks(client, self.settings, self.topics.ack)
        client.publish(self.topics.status, ONLINE, qos=1, retain=True)
        if self.ha_discovery:
            for topic, payload in discovery_messages(self.topics):
                client.publish(topic, payload, qos=1, retain=True)
        if client.loop(0) != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(f"MQTT broker {self.settings.address} dropped the connection")
        return client

    def _serve(self, conn, client) -> None:
        mqtt = import_paho()
        sender = OutboxSender(conn, client, self.topics, self.clock, self.window, self.ack_timeout_s, self.timer)
        acks = [0]  # ack messages received (each may move a cursor and make room in the window)

        def on_message(_client, _userdata, msg) -> None:
            acks[0] += 1
            sender.on_ack(msg.payload)

        client.on_message = on_message
        stepped_acks, stepped_at = -1, float("-inf")
        try:
            while not self._stop.is_set():
                # the outbox is read when there is news (new rows, an ack) and at least every idle_poll_s (rows
                # written without notify(), re-sends due): not on every pass of the network loop, which runs
                # every 20 ms while rows wait for acks (the load bench: 200 senders polling their logs at 50 Hz
                # while the centre was slow took more CPU than the centre itself)
                if (not sender.busy or self._wake.is_set() or acks[0] != stepped_acks
                        or time.monotonic() - stepped_at >= self.idle_poll_s):
                    self._wake.clear()
                    stepped_acks, stepped_at = acks[0], time.monotonic()
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
                self.published[s] += sender.published[s]
                self.resent[s] += sender.resent[s]
