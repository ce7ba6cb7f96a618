"""`fieldear collect --metrics-port`: a Prometheus text endpoint for the collector (prometheus_client, the
optional extra ``fieldear[metrics]``, imported only here and only when the endpoint is asked for).

Metrics (counters are this process's, reset when `collect` restarts; per-device gauges come from the central
database's ``devices`` table, so they survive restarts):

- ``fieldear_collector_messages_total``                messages received (any kind, status included)
- ``fieldear_collector_stored_total{kind}``            rows stored: events, health, reviews
- ``fieldear_collector_duplicates_total``              re-delivered or re-sent copies ignored (and acknowledged)
- ``fieldear_collector_conflicts_total``, ``..._rejected_total``, ``..._db_errors_total``
- ``fieldear_collector_acks_total``, ``..._acked_rows_total``   ack messages published, rows confirmed in them
- ``fieldear_collector_connects_total``                connections to the broker
- ``fieldear_collector_up``                            1 while subscribed to the broker
- ``fieldear_device_last_seen_timestamp_seconds{device}``  receive time of the device's last message
- ``fieldear_device_lag_seconds{device}``               receive time minus send time of that message
- ``fieldear_device_backlog{device}``                   rows the device had not got acknowledged when it sent it
- ``fieldear_device_events{device}``                    events of the device in the central database
"""

from __future__ import annotations

import logging

from runtime.errors import FieldearError

log = logging.getLogger(__name__)


def import_prometheus():
    try:
        import prometheus_client
    except ImportError:
        raise FieldearError("--metrics-port needs prometheus_client, which is not installed",
                            hint="pip install 'fieldear[metrics]'") from None
    return prometheus_client


class CollectorMetrics:
    """A prometheus_client custom collector: reads the Collector's stats and the central DB on each scrape."""

    def __init__(self, collector):
        self.collector = collector

    def describe(self):
        return []  # unchecked collector: metrics are produced on each scrape

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.collector.stats
        yield CounterMetricFamily("fieldear_collector_messages", "Messages received from the broker", value=st.messages)
        stored = CounterMetricFamily("fieldear_collector_stored", "Rows stored in the central database", labels=["kind"])
        for kind in ("events", "health", "reviews"):
            stored.add_metric([kind], getattr(st, kind))
        yield stored
        for name, value, doc in (
            ("duplicates", st.duplicates, "Copies of rows already stored (ignored, acknowledged again)"),
            ("conflicts", st.conflicts, "Rows re-sent with different content (first kept)"),
            ("rejected", st.rejected, "Unreadable messages"),
            ("db_errors", st.db_errors, "Central database write failures (message not acknowledged)"),
            ("acks", st.acks_sent, "Ack messages published to devices"),
            ("acked_rows", st.acked_rows, "Rows confirmed in ack messages"),
            ("connects", st.connects, "Connections to the broker"),
        ):
            yield CounterMetricFamily(f"fieldear_collector_{name}", doc, value=value)
        yield GaugeMetricFamily("fieldear_collector_up", "1 while subscribed to the broker",
                                value=1.0 if self.collector.subscribed.is_set() else 0.0)
        seen = GaugeMetricFamily("fieldear_device_last_seen_timestamp_seconds",
                                 "Receive time of the device's last message (unix seconds)", labels=["device"])
        lag = GaugeMetricFamily("fieldear_device_lag_seconds",
                                "Receive time minus send time of the device's last message", labels=["device"])
        backlog = GaugeMetricFamily("fieldear_device_backlog",
                                    "Rows not yet acknowledged on the device when it sent its last message",
                                    labels=["device"])
        events = GaugeMetricFamily("fieldear_device_events", "Events of the device in the central database",
                                   labels=["device"])
        try:
            for device, last_seen, lag_s, n_backlog, n_events in self._devices():
                seen.add_metric([device], last_seen)
                if lag_s is not None:
                    lag.add_metric([device], lag_s)
                if n_backlog is not None:
                    backlog.add_metric([device], n_backlog)
                events.add_metric([device], n_events or 0)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the DB is busy or unreachable
            log.warning("metrics: cannot read the central database: %s", exc)
        yield from (seen, lag, backlog, events)

    def _devices(self):
        store = self.collector.open_store(readonly=True, timeout_s=2.0)
        try:
            return store.device_metrics()
        finally:
            store.close()


def start_metrics_server(collector, port: int, addr: str = "127.0.0.1"):
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns the HTTP server (``.server_address`` has
    the real port when ``port`` is 0; ``.shutdown()`` stops it)."""
    prom = import_prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(CollectorMetrics(collector))
    try:
        server, _thread = prom.start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise FieldearError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}",
                            hint="choose another --metrics-port") from None
    log.info("metrics on http://%s:%d/metrics", addr, server.server_address[1])
    return server
