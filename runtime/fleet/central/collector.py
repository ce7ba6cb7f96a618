"""The central collector: every device's events, health and status from the broker into one central database
(a SQLite file, or PostgreSQL for ``--db postgresql://...``: the store interface of runtime/fleet/central/store.py).

``Collector`` subscribes (QoS 1) to ``<prefix>/+/events``, ``/health``, ``/reviews`` and ``/status``
with a persistent session (``clean_session=False``, fixed client id): while the collector is away the
broker keeps its QoS 1 messages; with broker persistence on (Debian's default) also across a broker
restart. A message is committed before paho sends its PUBACK (the callback runs first), and rows are
``INSERT ... ON CONFLICT DO NOTHING`` under ``UNIQUE(device_id, generation, event_id)`` (``generation``: the device log's
generation id, ``''`` from devices older than it): a redelivered message is stored once, and a recreated
device log (ids from 1 again, a new generation) never collides with the old one.

**End-to-end acknowledgement**: after each pass of the network loop (the messages of that pass committed),
the collector publishes, QoS 1, on ``<prefix>/<device>/ack`` one JSON message per device and generation:
``{"generation": G, "events": [ids], "health": [ids], "reviews": [ids]}`` with every id it stored *or already
had* (a duplicate is acknowledged again: the device re-sent it because the first ack was lost). Devices move
their cursors only on these acks; whatever is lost anywhere (broker crash, collector crash) is re-sent by the
device after its ack timeout. The receive time (``received_ts``, unix seconds from the injected clock) is kept
for latency; ``devices`` keeps each device's last message time and the backlog it reported.

``report_rows(db, by)`` (report.py) summarises the central database per device, label or day.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.fleet.central.store import (
    EVENT_COLUMNS,
    CentralStore,
    as_store,
    describe_db,
    is_postgres_url,
    open_sqlite,
    open_store,
)
from runtime.fleet.mqtt import (
    Backoff,
    BrokerUnavailable,
    MqttSettings,
    connect_client,
    drop_client,
    import_paho,
    new_client,
)

log = logging.getLogger(__name__)

# the central store (SQLite file or PostgreSQL) and its schema: runtime/fleet/central/store.py


def open_central(db_path: str | Path, timeout_s: float = 10.0) -> sqlite3.Connection:
    """The central SQLite file as a plain sqlite3 connection, created and migrated (see ``open_store`` for
    either back end)."""
    return open_sqlite(db_path, timeout_s)


@dataclass
class CollectorStats:
    events: int = 0
    health: int = 0
    reviews: int = 0
    status: int = 0
    duplicates: int = 0  # redelivered messages ignored
    conflicts: int = 0  # same (device, event_id) but different content: a device log was recreated?
    rejected: int = 0  # unparseable messages
    db_errors: int = 0  # central DB write failures (message not acknowledged, redelivered later)
    connects: int = 0
    messages: int = 0  # messages received (any kind)
    acks_sent: int = 0  # ack messages published (each confirms one or more rows)
    acked_rows: int = 0  # rows confirmed in them
    by_device: dict[str, int] = field(default_factory=dict)


class Collector:
    """Receives from the broker into ``db`` (a SQLite path or a postgresql:// URL) until ``run(stop_event)``'s
    event is set."""

    def __init__(
        self,
        db_path: str | Path,
        settings: MqttSettings,
        *,
        client_id: str = "fieldear-collector",
        clock=time.time,
        rng: random.Random | None = None,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        db_timeout_s: float = 10.0,
    ):
        import_paho()
        self.db = db_path if is_postgres_url(db_path) else Path(db_path)
        self.db_path = None if is_postgres_url(db_path) else self.db  # the SQLite file (None on PostgreSQL)
        self.db_name = describe_db(db_path)
        self.db_timeout_s = db_timeout_s
        self.settings = settings
        self.client_id = client_id
        self.clock = clock
        self.rng = rng or random.Random()
        self.backoff_s = backoff_s
        self.prefix = settings.topic_prefix
        self.stats = CollectorStats()
        self.subscribed = threading.Event()
        # (device, generation) -> stream -> ids stored or already stored, not yet acknowledged to the device
        self._acks: dict[tuple[str, str], dict[str, list[int]]] = {}
        open_store(self.db).close()  # errors (bad path, server unreachable, no driver) in the caller's thread

    def open_store(self, readonly: bool = False, timeout_s: float | None = None) -> CentralStore:
        return open_store(self.db, self.db_timeout_s if timeout_s is None else timeout_s, readonly=readonly)

    def run(self, stop: threading.Event) -> CollectorStats:
        store = self.open_store()
        backoff = Backoff(*self.backoff_s, self.rng, self.settings.address)
        try:
            while not stop.is_set():
                if not store.healthy():  # PostgreSQL: the connection to the server was lost
                    try:
                        store.reconnect()
                    except store.errors as exc:
                        self.stats.db_errors += 1
                        log.error("cannot reconnect to the central database %s: %s", self.db_name, exc)
                        backoff.wait(stop)
                        continue
                client = new_client(self.settings, self.client_id, clean_session=False)
                try:
                    self._open(client, store)
                except store.errors as exc:  # a queued message arrived while subscribing
                    self.stats.db_errors += 1
                    log.error("cannot write the central database %s: %s; reconnecting", self.db_name, exc)
                    drop_client(client)
                    backoff.wait(stop)
                    continue
                except BrokerUnavailable as exc:
                    backoff.failed(exc, stop)
                    continue
                backoff.connected()
                self.stats.connects += 1
                reason = self._serve(client, stop, store)
                self.subscribed.clear()
                if reason:
                    log.warning("MQTT connection to %s lost (%s); reconnecting", self.settings.address, reason)
                    drop_client(client)
                    backoff.lost(stop)
                else:
                    client.disconnect()
                    client.loop(0.05)
        finally:
            store.close()
        return self.stats

    def _open(self, client, store: CentralStore) -> None:
        mqtt = import_paho()

        def on_message(_client, _userdata, msg):
            try:
                self.handle(store, msg.topic, msg.payload, bool(msg.retain))
            except store.errors:
                store.rollback()
                raise  # out of client.loop(), before paho acknowledges the message

        client.on_message = on_message
        connect_client(client, self.settings)
        subs = [(f"{self.prefix}/+/{kind}", 1) for kind in ("events", "health", "reviews", "status")]
        granted = {}
        client.on_subscribe = lambda _c, _u, mid, codes, _p: granted.setdefault(mid, codes)
        rc, mid = client.subscribe(subs)
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while mid not in granted:
            if client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS or time.monotonic() > deadline:
                drop_client(client)
                raise BrokerUnavailable(f"MQTT broker {self.settings.address} did not confirm the subscription")
        if any(code.is_failure for code in granted[mid]):
            drop_client(client)
            raise BrokerUnavailable(
                f"MQTT broker {self.settings.address} refused the subscription {granted[mid]}",
                hint="check the broker's ACL for the collector's user",
            )
        self.subscribed.set()
        log.info("collecting %s/+/{events,health,reviews,status} from %s", self.prefix, self.settings.address)

    def _serve(self, client, stop: threading.Event, store: CentralStore) -> str | None:
        """Process messages until ``stop``; returns why the connection ended (None: asked to stop).

        If the central database cannot be written (disk full, locked), the message is not acknowledged: the
        connection is dropped and the broker redelivers it to the persistent session after the reconnect."""
        mqtt = import_paho()
        while not stop.is_set():
            try:
                rc = client.loop(0.1)
            except store.errors as exc:
                self.stats.db_errors += 1
                log.error("cannot write the central database %s: %s", self.db_name, exc)
                self.publish_acks(client)  # what was committed before the failure
                return f"central database error: {exc}"
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return mqtt.error_string(rc)
            rc = self.publish_acks(client)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return f"cannot publish acks: {mqtt.error_string(rc)}"
        self.publish_acks(client)
        return None

    # ---- end-to-end acknowledgement ----

    def ack_topic(self, device: str) -> str:
        return f"{self.prefix}/{device}/ack"

    def take_acks(self) -> list[tuple[str, dict]]:
        """The ack messages owed to devices (topic, payload dict), forgetting them."""
        acks, self._acks = self._acks, {}
        out = []
        for (device, generation), streams in acks.items():
            if not generation:
                continue  # a device from before generation ids does not read acks (its cursor moves on PUBACK)
            out.append((self.ack_topic(device),
                        {"generation": generation, **{k: sorted(set(v)) for k, v in streams.items()}}))
        return out

    def publish_acks(self, client) -> int:
        """Publish (QoS 1) the acks of every row committed since the last call; an ack lost on the way only
        means the device sends the row again (and gets the ack of the duplicate)."""
        mqtt = import_paho()
        rc = mqtt.MQTT_ERR_SUCCESS
        for topic, payload in self.take_acks():
            info = client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                rc = info.rc
                continue
            self.stats.acks_sent += 1
            self.stats.acked_rows += sum(len(v) for k, v in payload.items() if k != "generation")
        return rc

    def _owe_ack(self, device: str, generation: str, stream: str, row_id: int) -> None:
        self._acks.setdefault((device, generation), {}).setdefault(stream, []).append(int(row_id))

    def _seen(self, store: CentralStore, device: str, msg: dict, now: float) -> None:
        backlog = msg.get("backlog")
        backlog = backlog if isinstance(backlog, int) and not isinstance(backlog, bool) else None
        sent = msg.get("sent_ts")
        lag = round(now - sent, 3) if isinstance(sent, (int, float)) and not isinstance(sent, bool) else None
        store.seen(device, _generation(msg) or None, now, backlog, lag)

    # ---- storing one message ----

    def handle(self, conn, topic: str, payload: bytes, retained: bool = False) -> str:
        """Store one message; returns what happened: stored, duplicate, conflict, status, rejected.
        ``conn``: a central store (or a plain sqlite3 connection to a central file)."""
        store = as_store(conn)
        now = self.clock()
        parts = topic.split("/")
        prefix_len = len(self.prefix.split("/"))
        if len(parts) != prefix_len + 2:
            return self._reject(topic, "unexpected topic")
        device, kind = parts[prefix_len], parts[prefix_len + 1]
        self.stats.messages += 1
        if kind == "status":
            state = payload.decode("utf-8", "replace").strip()
            store.set_status(device, state, retained, now)
            store.commit()
            self.stats.status += 1
            log.info("device %s is %s", device, state)
            return "status"
        try:
            msg = json.loads(payload)
            if not isinstance(msg, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            return self._reject(topic, f"bad JSON: {exc}")
        if kind in ("events", "health", "reviews"):
            self._seen(store, device, msg, now)
        if kind == "events":
            return self._store_event(store, device, msg, now)
        if kind == "health":
            return self._store_health(store, device, msg, now)
        if kind == "reviews":
            return self._store_review(store, device, msg, now)
        return self._reject(topic, "unknown message kind")

    def _store_event(self, store: CentralStore, device: str, msg: dict, now: float) -> str:
        event_id = msg.get("event_id")
        if not isinstance(event_id, int) or isinstance(event_id, bool):
            return self._reject(f"{device}/events", "no integer event_id")
        generation = _generation(msg)
        label, start_utc = msg.get("label"), msg.get("start_utc")
        if generation and store.legacy_copy(device, event_id, label, start_utc):
            # stored before its log had a generation id (sent before the device's log was upgraded, re-sent after)
            store.commit()
            return self._done(device, generation, "events", event_id, "duplicate")
        settings = msg.get("settings")
        stored = store.insert_event(device, generation, event_id, {c: msg.get(c) for c in EVENT_COLUMNS},
                                    json.dumps(settings) if settings is not None else None, msg.get("sent_ts"), now)
        same = None if stored else store.event_matches(device, generation, event_id, label, start_utc)
        store.commit()
        if stored:
            self.stats.events += 1
            self.stats.by_device[device] = self.stats.by_device.get(device, 0) + 1
            return self._done(device, generation, "events", event_id, "stored")
        if same is False:
            self.stats.conflicts += 1
            log.warning(
                "device %s sent event %d of log generation %s again with different content; kept the first",
                device, event_id, generation or "(none)",
            )
            # acknowledged all the same: sending it again would not change anything
            return self._done(device, generation, "events", event_id, "conflict")
        self.stats.duplicates += 1
        return self._done(device, generation, "events", event_id, "duplicate")

    def _done(self, device: str, generation: str, stream: str, row_id: int, outcome: str) -> str:
        self._owe_ack(device, generation, stream, row_id)
        return outcome

    def _store_health(self, store: CentralStore, device: str, msg: dict, now: float) -> str:
        health_id = msg.get("health_id")
        if not isinstance(health_id, int) or isinstance(health_id, bool):
            return self._reject(f"{device}/health", "no integer health_id")
        generation = _generation(msg)
        health = msg.get("health")
        stored = store.insert_health(device, generation, health_id, msg.get("t_utc"),
                                     json.dumps(health) if health is not None else None, now)
        store.commit()
        if stored:
            self.stats.health += 1
            return self._done(device, generation, "health", health_id, "stored")
        self.stats.duplicates += 1
        return self._done(device, generation, "health", health_id, "duplicate")

    def _store_review(self, store: CentralStore, device: str, msg: dict, now: float) -> str:
        review_id, event_id = msg.get("review_id"), msg.get("event_id")
        if not isinstance(review_id, int) or not isinstance(event_id, int) or not msg.get("verdict"):
            return self._reject(f"{device}/reviews", "no integer review_id/event_id or no verdict")
        generation = _generation(msg)
        stored = store.insert_review(device, generation, review_id, event_id, msg["verdict"], msg.get("label"),
                                     msg.get("t_utc"), msg.get("reviewer"), now)
        store.commit()
        if stored:
            self.stats.reviews += 1
            return self._done(device, generation, "reviews", review_id, "stored")
        self.stats.duplicates += 1
        return self._done(device, generation, "reviews", review_id, "duplicate")

    def _reject(self, topic: str, why: str) -> str:
        self.stats.rejected += 1
        log.warning("ignored a message on %s: %s", topic, why)
        return "rejected"


def _generation(msg: dict) -> str:
    """The message's log generation id (``''``: a device from before generation ids)."""
    g = msg.get("generation")
    return g if isinstance(g, str) and 0 < len(g) <= 64 else ""
