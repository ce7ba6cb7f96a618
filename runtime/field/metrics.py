"""`fieldear listen --metrics-port`: the device's own Prometheus text endpoint (prometheus_client, the optional
extra ``fieldear[metrics]``, imported only when the endpoint is asked for).

A custom collector reads the listener's counters at scrape time (no work per block). Metrics:

- ``fieldear_device_blocks_total``                 blocks scored by this run
- ``fieldear_device_overruns_total``, ``fieldear_device_dropped_blocks_total``   the audio source's losses
- ``fieldear_device_events_total{label}``          events logged by this run, per label
- ``fieldear_device_outbox_backlog{stream}``       rows the collector has not acknowledged (only with MQTT)
- ``fieldear_device_db_size_bytes``, ``fieldear_device_disk_free_bytes``, ``fieldear_device_cpu_temperature_celsius``
- ``fieldear_device_seconds_since_last_audio``

Counters are this process's (they restart at 0 with `listen`, as Prometheus expects).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Callable

from runtime.field.heartbeat import THERMAL_ROOT, cpu_temperature, disk_free_mb
from runtime.fleet.central.metrics import import_prometheus
from runtime.listen.hooks import Hook

log = logging.getLogger(__name__)


class DeviceMetrics:
    """A prometheus_client custom collector over a running ``Listener`` (none before ``on_start``)."""

    def __init__(self, outbox: bool, clock: Callable[[], float] = time.time, thermal_root: Path = THERMAL_ROOT):
        self.outbox = outbox
        self.clock = clock
        self.thermal_root = thermal_root
        self.listener = None

    def describe(self):
        return []  # unchecked collector: metrics are produced on each scrape

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        listener = self.listener
        if listener is None:
            return
        s, src, store = listener.stats, listener.source.stats, listener.store
        yield CounterMetricFamily("fieldear_device_blocks", "Blocks scored by this run", value=s.blocks)
        yield CounterMetricFamily("fieldear_device_overruns", "Audio input overruns", value=src.overruns)
        yield CounterMetricFamily("fieldear_device_dropped_blocks", "Audio blocks dropped (the loop fell behind)",
                                  value=src.dropped_blocks)
        events = CounterMetricFamily("fieldear_device_events", "Events logged by this run", labels=["label"])
        for label, n in sorted(dict(s.events_by_label).items()):
            events.add_metric([label], n)
        yield events
        if self.outbox:
            yield from self._backlog(store.path)
        yield GaugeMetricFamily("fieldear_device_db_size_bytes", "Size of the log database (with its WAL)",
                                value=store.size_mb() * 1e6)
        free_mb = disk_free_mb(Path(store.path).parent)
        if free_mb is not None:
            yield GaugeMetricFamily("fieldear_device_disk_free_bytes", "Free space on the log's filesystem",
                                    value=free_mb * 1e6)
        temp = cpu_temperature(self.thermal_root)
        if temp is not None:
            yield GaugeMetricFamily("fieldear_device_cpu_temperature_celsius", "CPU temperature", value=temp)
        if s.last_audio is not None:
            yield GaugeMetricFamily("fieldear_device_seconds_since_last_audio", "Seconds since audio last arrived",
                                    value=max(0.0, self.clock() - s.last_audio))

    def _backlog(self, db_path):
        from prometheus_client.core import GaugeMetricFamily

        from runtime.errors import FieldearError
        from runtime.fleet import outbox
        from runtime.store.schema import connect

        backlog = GaugeMetricFamily("fieldear_device_outbox_backlog",
                                    "Rows the collector has not acknowledged yet", labels=["stream"])
        try:
            conn = connect(db_path, readonly=True, timeout=2.0)
            try:
                for stream in outbox.STREAMS:
                    backlog.add_metric([stream], outbox.count_pending(conn, stream))
            finally:
                conn.close()
        except (sqlite3.Error, FieldearError) as exc:  # a scrape must not fail because the log is busy
            log.warning("metrics: cannot read the outbox: %s", exc)
        yield backlog


class MetricsHook(Hook):
    """Serves ``/metrics`` on ``addr:port`` from construction (so a taken port fails before listening) until stop."""

    def __init__(self, port: int, addr: str = "127.0.0.1", *, outbox: bool = False,
                 clock: Callable[[], float] = time.time):
        from runtime.errors import FieldearError

        prom = import_prometheus()
        self.metrics = DeviceMetrics(outbox, clock=clock)
        registry = prom.CollectorRegistry(auto_describe=False)
        registry.register(self.metrics)
        try:
            self.server, _thread = prom.start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            raise FieldearError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}",
                                hint="choose another --metrics-port") from None
        log.info("metrics on http://%s:%d/metrics", addr, self.server.server_address[1])

    def on_start(self, listener) -> None:
        self.metrics.listener = listener

    def on_stop(self, listener) -> None:
        self.server.shutdown()
        self.server.server_close()
