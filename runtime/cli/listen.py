"""`fieldear devices | listen | events | export`. Imports nothing heavy at import time.

Hooks from other areas: ``listen`` imports each module in ``HOOK_MODULES`` (skipping ones not installed)
and calls its ``listen_hooks(config, args)`` -> list of hook objects (see ``runtime.listen`` for the hook
methods). ``config`` is the validated ``runtime.config.Config`` with the command-line overrides applied.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

log = logging.getLogger(__name__)

HOOK_MODULES = ("runtime.field.heartbeat", "runtime.fleet.mqtt")  # sd_notify hooks come from runtime.health


def register(sub) -> None:
    p = sub.add_parser("devices", help="list audio input devices (--test records 3 s and shows the level)")
    p.add_argument("--test", action="store_true", help="record 3 s from the (or --device) input and show its level")
    p.add_argument("--device", default=None, help="device index or name for --test (default: the default input)")
    p.add_argument("--seconds", type=float, default=3.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("listen", help="classify a microphone (or --file) continuously and log what is heard")
    p.add_argument("--config", default=None, help="TOML config (see firmware_tools/fieldear.example.toml)")
    p.add_argument("--model", default=None, help="model bundle directory (default: the bundled default model)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads")
    src = p.add_argument_group("audio")
    src.add_argument("--file", default=None, help="replay this recording instead of a microphone; exits at its end")
    src.add_argument("--realtime", action="store_true", help="with --file: pace the replay at real time")
    src.add_argument("--speed", type=float, default=1.0, help=argparse.SUPPRESS)  # pacing factor for --realtime
    src.add_argument("--device-queue", type=int, default=0, help=argparse.SUPPRESS)  # file replay through a bounded queue
    src.add_argument("--device", default=None, help="input device index or name (`fieldear devices`)")
    src.add_argument("--sample-rate", type=int, default=None, help="capture rate (default: the model's if the device has it)")
    det = p.add_argument_group("detection")
    det.add_argument("--threshold", action="append", default=[], metavar="LABEL=T",
                     help="per-label threshold (repeatable); default: the bundle's F1-optimal thresholds")
    det.add_argument("--default-threshold", type=float, default=None, help="threshold for labels without one")
    det.add_argument("--smoothing", type=int, default=None, help="moving average over N blocks (default 1)")
    det.add_argument("--hysteresis", type=float, default=None, help="off threshold = threshold - this (default 0.1)")
    det.add_argument("--min-event", type=float, default=None, dest="min_event_s", help="minimum event seconds")
    det.add_argument("--merge-gap", type=float, default=None, dest="merge_gap_s", help="merge events of a label closer than this (s)")
    det.add_argument("--ignore", action="append", default=[], metavar="LABEL",
                     help="never report this label as an event (e.g. background; repeatable)")
    det.add_argument("--block-hop", type=int, default=None, help="frames between blocks (default: the bundle's)")
    st = p.add_argument_group("log")
    st.add_argument("--db", default=None, help="log database (default: $FIELDEAR_DATA_DIR or ~/.local/share/fieldear, fieldear.db)")
    st.add_argument("--data-dir", default=None, help="data directory for the default database and clips")
    st.add_argument("--device-id", default=None, help="this device's id in the log (default: from /etc/machine-id)")
    st.add_argument("--window-every", type=int, default=None, help="log every Nth block's scores (default 1)")
    st.add_argument("--no-windows", action="store_true", help="do not log block scores, only events")
    st.add_argument("--keep-days", type=float, default=None, help="delete log rows older than this")
    st.add_argument("--max-db-mb", type=float, default=None, help="keep the log under this size (oldest first, windows before events)")
    st.add_argument("--clips", action="store_true", default=None, help="save each event's audio as WAV next to the log")
    st.add_argument("--clip-quota-mb", type=float, default=None, help="disk quota for clips (oldest deleted first)")
    out = p.add_argument_group("output")
    out.add_argument("--summary", action="store_true", help="at the end, print the events heard as a table")
    out.add_argument("--json", action="store_true", help="at the end, print the run summary as JSON")
    # -- fleet area (runtime/mqtt_sink.py listen_hooks): report to an MQTT broker --
    fl = p.add_argument_group("fleet (MQTT)")
    fl.add_argument("--mqtt", default=None, metavar="HOST:PORT",
                    help="send events and heartbeats to this MQTT broker (default: [mqtt] host of --config)")
    fl.add_argument("--drain-timeout", type=float, default=None, metavar="S",
                    help="at the end, wait at most S s for the outbox to empty (default 10 with --file, else 0)")
    fl.add_argument("--ha-discovery", action="store_true",
                    help="publish Home Assistant MQTT discovery config (retained)")
    # -- end fleet area --
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("events", help="show logged events")
    p.add_argument("--db", default=None, help="log database (default: the data dir's fieldear.db)")
    p.add_argument("--since", default=None, help="e.g. 30m, 1h, 2d or an ISO time")
    p.add_argument("--label", default=None)
    p.add_argument("--limit", type=int, default=50, help="at most this many (latest; 0 = all)")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("export", help="export logged events, block scores or health rows as CSV or JSON lines")
    p.add_argument("--db", default=None, help="log database (default: the data dir's fieldear.db)")
    p.add_argument("--what", choices=("events", "windows", "health"), default="events")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("--since", default=None, help="e.g. 30m, 1h, 2d or an ISO time")
    p.add_argument("--out", default=None, help="output file (default: stdout)")
    p.set_defaults(func=cmd_export)


# ---------------------------------------------------------------- devices


def cmd_devices(args) -> int:
    import numpy as np

    from runtime.audio.sources import input_devices, record

    device = _device_arg(args.device)
    devices = input_devices()
    if not devices:
        print("no audio input devices found (is a microphone plugged in? `arecord -l` lists ALSA devices)")
    for d in devices:
        mark = "*" if d["default"] else " "
        rates = ", ".join(str(r) for r in d["rates"]) or "none of the common rates"
        print(f"{mark} {d['index']:>3}  {d['name']}  ({d['channels']} ch, default {d['default_rate']:.0f} Hz; accepts {rates})")
    if devices:
        print("* = default input; pass --device INDEX or NAME to `fieldear listen`")
    if not args.test:
        return 0 if devices else 1
    samples, rate = record(args.seconds, device=device)
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    clipped = float(np.mean(np.abs(samples) >= 0.999)) if len(samples) else 0.0
    db = lambda x: 20 * np.log10(max(x, 1e-10))  # noqa: E731
    print(f"recorded {len(samples) / rate:.1f} s at {rate} Hz: level {db(rms):.1f} dBFS RMS, peak {db(peak):.1f} dBFS, "
          f"clipped {100 * clipped:.2f} % of samples")
    if rms < 1e-5:
        print("warning: digital silence: the input may be muted or the wrong device")
    elif clipped > 0.001:
        print("warning: clipping: lower the input gain (alsamixer)")
    return 0


def _device_arg(value):
    if value is None:
        return None
    return int(value) if str(value).isdigit() else value


# ---------------------------------------------------------------- listen


def _parse_thresholds(items) -> dict:
    from runtime.errors import ConfigError

    out = {}
    for item in items:
        label, sep, value = item.partition("=")
        try:
            out[label.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--threshold {item!r}: expected LABEL=VALUE", "e.g. --threshold dog=0.6") from None
        if not sep or not label.strip():
            raise ConfigError(f"--threshold {item!r}: expected LABEL=VALUE", "e.g. --threshold dog=0.6")
    return out


def build_config(args):
    """The config file (or defaults) with the command-line values applied."""
    from runtime.config import apply_overrides, default_config, load_config
    from runtime.paths import user_data_dir

    config = load_config(args.config, device_id=args.device_id) if args.config else default_config(args.device_id)
    data_dir = args.data_dir if args.data_dir is not None else (None if args.config else str(user_data_dir()))
    return apply_overrides(
        config, device_id=args.device_id, model=args.model, threads=args.threads, device=args.device,
        sample_rate=args.sample_rate, block_hop=args.block_hop, threshold=args.default_threshold,
        thresholds=_parse_thresholds(args.threshold) or None, smoothing=args.smoothing, hysteresis=args.hysteresis,
        min_event_s=args.min_event_s, merge_gap_s=args.merge_gap_s, data_dir=data_dir, db=args.db,
        log_windows=False if args.no_windows else None, window_every=args.window_every, keep_days=args.keep_days,
        max_db_mb=args.max_db_mb, clips=args.clips, clip_quota_mb=args.clip_quota_mb)


def build_hooks(config, args) -> list:
    hooks = []
    for name in HOOK_MODULES:  # each module's listen_hooks(config, args) returns the hooks it wants
        hooks.extend(importlib.import_module(name).listen_hooks(config, args) or [])
    return hooks


def cmd_listen(args) -> int:
    import signal
    import threading

    from runtime.audio.sources import FileSource, MicSource
    from runtime.config import check_labels
    from runtime.detect.events import PostSettings
    from runtime.listen.clips import ClipRecorder
    from runtime.listen.loop import Listener
    from runtime.model.model import Model
    from runtime.store.writer import Store

    config = build_config(args)
    model = Model.load(config.model.path, threads=config.model.threads)
    check_labels(config, model.labels)
    post = config.detect.post_kwargs()
    post["ignore"] = tuple(dict.fromkeys([*post.get("ignore", ()), *args.ignore]))
    unknown = sorted(set(post["ignore"]) - set(model.labels))
    if unknown:
        from runtime.errors import ConfigError

        raise ConfigError(f"--ignore: unknown label(s) {', '.join(unknown)}", f"the model's labels are: {', '.join(model.labels)}")
    settings = PostSettings.for_bundle(model.bundle, dict(config.detect.thresholds), **post)
    settings = settings.resolved(model.labels)
    block_hop = config.audio.block_hop
    params = model.params if block_hop is None else model.params.with_block_hop(block_hop)
    if args.file:
        # as fast as possible: larger reads (fewer calls per second of audio); paced or queued: mic-sized chunks
        chunk_s = 0.5 if args.realtime or args.device_queue else 5.0
        source = FileSource(args.file, realtime=args.realtime, speed=args.speed, device_queue=args.device_queue,
                            chunk_seconds=chunk_s)
    else:
        source = MicSource(device=_device_arg(config.audio.device),
                           model_rate=config.audio.sample_rate or params.sample_rate)
    window_every = config.store.window_every if config.store.log_windows else 0
    db_path = config.store.db_path
    run_settings = {**settings.to_dict(), "block_hop": params.block_hop, "window_every": window_every}
    store = Store(db_path, device_id=config.device_id, source=source.name, model_sha=model.bundle.sha256,
                  settings=run_settings, window_every=window_every, keep_days=config.store.keep_days,
                  max_db_mb=config.store.max_db_mb)
    clips = None
    if config.clips.enabled:
        clips = ClipRecorder(db_path.parent / "clips", pre_s=config.clips.pre_s, post_s=config.clips.post_s,
                             quota_mb=config.clips.quota_mb)
    hooks = build_hooks(config, args)
    listener = Listener(model, source, store, settings, hooks=hooks, block_hop=block_hop, clips=clips)

    stop = threading.Event()

    def _stop(signum, frame):
        log.info("signal %d: closing open events and stopping", signum)
        stop.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    log.info("listening to %s with %s (%s), logging to %s", source.name, model.bundle.name, model.bundle.short_sha, db_path)
    try:
        summary = listener.run(stop)
    finally:
        store.close()
        for s, h in old.items():
            signal.signal(s, h)
    _print_summary(summary, args)
    return 0


def _print_summary(summary: dict, args) -> None:
    import json

    if args.json:
        print(json.dumps(summary, indent=2))
        return
    speed = f", {summary['x_realtime']:.0f}x real time" if summary.get("x_realtime") else ""
    print(f"{summary['source']}: {summary['audio_s']:.1f} s of audio, {summary['blocks']} blocks, "
          f"{summary['events']} events{speed}; logged to {summary['db']} ({summary['run']})")
    problems = {k: summary[k] for k in ("overruns", "dropped_blocks", "dropped_rows", "hook_errors") if summary[k]}
    if problems:
        print("problems: " + ", ".join(f"{k} {v}" for k, v in problems.items()))
    if args.summary:
        from runtime.store.queries import runs
        from runtime.store.schema import connect

        conn = connect(summary["db"], readonly=True)
        try:
            run = next((r for r in runs(conn) if r["key"] == summary["run"]), None)
            first = run["first_event_id"] if run else 0
            rows = conn.execute("SELECT id, label, start_s, end_s, peak, mean, start_utc FROM events WHERE id >= ? "
                                "ORDER BY start_s", (first,)).fetchall()
        finally:
            conn.close()
        _print_event_table(rows, offsets=True)


def _print_event_table(rows, offsets: bool) -> None:
    if not rows:
        print("(no events)")
        return
    if offsets:
        print(f"{'start':>9} {'end':>9} {'dur':>6}  {'label':<16} {'peak':>5} {'mean':>5}")
        for r in rows:
            print(f"{_mmss(r['start_s']):>9} {_mmss(r['end_s']):>9} {r['end_s'] - r['start_s']:6.1f}  "
                  f"{r['label']:<16} {r['peak']:5.2f} {r['mean']:5.2f}")
    else:
        print(f"{'id':>6}  {'start (UTC)':<24} {'dur':>6}  {'label':<16} {'peak':>5}  source")
        for r in rows:
            print(f"{r['id']:>6}  {r['start_utc']:<24} {r['end_s'] - r['start_s']:6.1f}  {r['label']:<16} "
                  f"{r['peak']:5.2f}  {r['source']}")


def _mmss(seconds: float) -> str:
    m, s = divmod(float(seconds), 60.0)
    return f"{int(m)}:{s:04.1f}" if m < 60 else f"{int(m // 60)}:{int(m % 60):02d}:{s:04.1f}"


# ---------------------------------------------------------------- events / export


def _db_arg(value):
    from pathlib import Path

    from runtime.paths import default_db_path

    return Path(value) if value else default_db_path()


def cmd_events(args) -> int:
    import time

    from runtime.store.queries import parse_since, query
    from runtime.store.schema import connect

    since = parse_since(args.since, time.time()) if args.since else None
    conn = connect(_db_arg(args.db), readonly=True)
    try:
        rows = query(conn, "events", since_utc=since, label=args.label, limit=args.limit or None).fetchall()
    finally:
        conn.close()
    _print_event_table(rows, offsets=False)
    return 0


def cmd_export(args) -> int:
    import csv
    import json
    import time

    from runtime.store.queries import parse_since, query
    from runtime.store.schema import TABLE_COLUMNS, connect

    since = parse_since(args.since, time.time()) if args.since else None
    conn = connect(_db_arg(args.db), readonly=True)
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
    try:
        columns = TABLE_COLUMNS[args.what]
        writer = csv.writer(out) if args.format == "csv" else None
        if writer:
            writer.writerow(columns)
        n = 0
        for row in query(conn, args.what, since_utc=since):
            if writer:
                writer.writerow([row[c] for c in columns])
            else:
                out.write(json.dumps({c: row[c] for c in columns}) + "\n")
            n += 1
    finally:
        conn.close()
        if args.out:
            out.close()
    if args.out:
        log.info("wrote %d %s rows to %s", n, args.what, args.out)
    return 0
