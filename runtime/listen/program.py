"""`fieldear listen` assembled in one place: config -> source -> features -> model -> detect -> store -> hooks.

``build_listener(config, options)`` reads top to bottom; ``run(options)`` is the whole command (signals,
config, listener, summary). The CLI only turns its flags into a ``ListenOptions``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from runtime.config import (
    Config,
    apply_overrides,
    check_labels,
    default_config,
    load_config,
)
from runtime.field.signals import Signals
from runtime.paths import clips_dir, user_data_dir

if TYPE_CHECKING:
    from runtime.listen.loop import Listener

log = logging.getLogger(__name__)

# Replaying a file as fast as possible: larger reads (fewer calls per second of audio); paced: mic-sized chunks.
FAST_REPLAY_CHUNK_S = 5.0
PACED_REPLAY_CHUNK_S = 0.5
# With --file, how long the end of a run waits for the MQTT outbox to empty (a microphone run: 0, its service
# manager has its own stop timeout).
FILE_DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ListenOptions:
    """What `fieldear listen` adds to the config file. ``None`` = not given: the file's value, else the default.

    ``overrides`` are ``runtime.config.apply_overrides`` values (``model``, ``db``, ``thresholds``, ``ignore``,
    ...), validated there once with errors that name the option.
    """

    config: Path | None = None
    device_id: str | None = None
    data_dir: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    file: Path | None = None  # replay a recording instead of the microphone
    realtime: bool = False  # with file: pace the replay
    speed: float = 1.0  # with realtime: this many times real time
    mqtt: str | None = None  # HOST:PORT, overrides [mqtt] host/port
    drain_timeout_s: float | None = None
    ha_discovery: bool = False


def effective_config(options: ListenOptions) -> Config:
    """The config file (or the defaults) with the command-line values applied. Also what a reload re-reads."""
    if options.config is not None:
        config = load_config(options.config, device_id=options.device_id)
    else:
        config = default_config(options.device_id)
    data_dir = options.data_dir
    if data_dir is None and options.config is None:
        data_dir = user_data_dir()  # a listen run by hand logs to the user's data dir, not /var/lib
    return apply_overrides(config, device_id=options.device_id, data_dir=data_dir, **options.overrides)


def build_listener(config: Config, options: ListenOptions, *, reload_requested: threading.Event | None = None,
                   clock: Callable[[], float] = time.time, environ: Mapping[str, str] | None = None):
    """The listener for one run, every part named in data-path order."""
    from runtime.audio.sources import FileSource, MicSource
    from runtime.detect.events import PostSettings
    from runtime.listen.clips import ClipRecorder
    from runtime.listen.loop import Listener
    from runtime.model.model import Model
    from runtime.store.writer import Store

    # model (and the features it wants)
    model = Model.load(config.model.path, threads=config.model.threads)
    check_labels(config, model.labels)
    block_hop = config.audio.block_hop
    params = model.params if block_hop is None else model.params.with_block_hop(block_hop)

    # detect: the bundle's per-label thresholds, then the config's
    settings = PostSettings.for_bundle(model.bundle, dict(config.detect.thresholds), **config.detect.post_kwargs())
    settings = settings.resolved(model.labels)

    # source
    if options.file is not None:
        chunk_s = PACED_REPLAY_CHUNK_S if options.realtime else FAST_REPLAY_CHUNK_S
        source = FileSource(options.file, realtime=options.realtime, speed=options.speed, chunk_seconds=chunk_s)
    else:
        source = MicSource(device=config.audio.device, model_rate=config.audio.sample_rate or params.sample_rate)

    # store: every block's scores (or every Nth) and every event, with the settings they were made with
    window_every = config.store.window_every if config.store.log_windows else 0
    db_path = config.store.db_path
    store = Store(db_path, device_id=config.device_id, source=source.name, model_sha=model.bundle.sha256,
                  settings={**settings.to_dict(), "block_hop": params.block_hop, "window_every": window_every},
                  window_every=window_every, keep_days=config.store.keep_days, max_db_mb=config.store.max_db_mb,
                  clock=clock)
    clips = None
    if config.clips.enabled:
        clips = ClipRecorder(clips_dir(db_path), pre_s=config.clips.pre_s, post_s=config.clips.post_s,
                             quota_mb=config.clips.quota_mb, min_free_mb=config.clips.min_free_mb)

    # hooks: the field service (systemd, heartbeat, reload), the fleet (MQTT outbox), then the metrics endpoint
    reload_config = (lambda: effective_config(options)) if reload_requested is not None else None
    hooks = field_hooks(config, reload_config=reload_config, reload_requested=reload_requested, clock=clock,
                        environ=environ)
    hooks += fleet_hooks(config, options)
    if config.metrics.port is not None:
        from runtime.field.metrics import MetricsHook

        hooks.append(MetricsHook(config.metrics.port, outbox=bool(options.mqtt or config.mqtt.host), clock=clock))

    return Listener(model, source, store, settings, hooks=hooks, clock=clock, block_hop=block_hop, clips=clips)


def field_hooks(config: Config, *, reload_config: Callable[[], Config] | None = None,
                reload_requested: threading.Event | None = None, clock: Callable[[], float] = time.time,
                monotonic: Callable[[], float] = time.monotonic, environ: Mapping[str, str] | None = None) -> list:
    """systemd notify/watchdog, heartbeat rows and (given ``reload_config``) SIGHUP reload."""
    from runtime.field.heartbeat import HeartbeatHook
    from runtime.field.reload import Reloader
    from runtime.field.sdnotify import Notifier
    from runtime.field.watchdog import NotifyHook

    notifier = Notifier(environ)
    notify = NotifyHook(notifier, stall_s=config.health.watchdog_stall_s, monotonic=monotonic)
    heartbeat = HeartbeatHook(config.health.every_s, location=config.device.location, clock=clock,
                              monotonic=monotonic, notify=notify)
    hooks: list = [notify, heartbeat]
    if reload_config is not None:

        def apply_health(new: Config) -> None:
            notify.stall_s = new.health.watchdog_stall_s
            heartbeat.every_s = new.health.every_s
            heartbeat.location = new.device.location

        hooks.append(Reloader(config, reload_config, notifier=notifier, requested=reload_requested,
                              on_config=[apply_health], monotonic=monotonic))
    if notifier.enabled:
        log.info("systemd notify socket found; watchdog %s",
                 f"{notifier.watchdog_s:g} s" if notifier.watchdog_s else "off")
    return hooks


def fleet_hooks(config: Config, options: ListenOptions) -> list:
    """An outbox sender to the MQTT broker of ``--mqtt`` or ``[mqtt] host``; none without a broker."""
    if not options.mqtt and not config.mqtt.host:
        return []
    from runtime.fleet.mqtt import MqttSettings, MqttSink
    from runtime.fleet.outbox import OutboxHook

    settings = MqttSettings.from_config(config.mqtt, options.mqtt)
    drain = options.drain_timeout_s
    if drain is None:
        drain = FILE_DRAIN_TIMEOUT_S if options.file is not None else 0.0
    sink = MqttSink(config.store.db_path, settings, config.device_id, ha_discovery=options.ha_discovery)
    log.info("reporting to MQTT broker %s as %s", settings.address, config.device_id)
    return [OutboxHook(sink, drain_timeout_s=drain)]


def run(options: ListenOptions, signals: Signals | None = None,
        started: Callable[[Listener], None] | None = None) -> dict:
    """`fieldear listen`: listen until the source ends or a stop signal; returns the run summary. ``started`` is
    called with the listener once it is built (the CLI prints the bundle's licence notice from it)."""
    signals = signals or Signals().install()
    try:
        config = effective_config(options)
        listener = build_listener(config, options, reload_requested=signals.reload)
        log.info("listening to %s with %s (%s), logging to %s", listener.source.name, listener.model.bundle.name,
                 listener.model.bundle.short_sha, listener.store.path)
        if started is not None:
            started(listener)
        try:
            return listener.run(signals.stop)
        finally:
            listener.store.close()
    finally:
        signals.restore()

