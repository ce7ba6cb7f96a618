"""`fieldear devices | listen | events | export`. Imports nothing heavy at import time.

``listen`` turns its flags into a ``runtime.listen.program.ListenOptions``; the listener is assembled there.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

def register(sub) -> None:
    _register_devices(sub)
    _register_background(sub)
    _register_listen(sub)
    _register_log_reading(sub)


def _register_devices(sub) -> None:
    p = sub.add_parser("devices", help="list audio input devices (--test records 3 s and shows the level)")
    p.add_argument("--test", action="store_true", help="record 3 s from the (or --device) input and show its level")
    p.add_argument("--device", default=None, help="device index or name for --test (default: the default input)")
    p.add_argument("--seconds", type=float, default=3.0, help="with --test: seconds to record")
    p.set_defaults(func=cmd_devices)


def _register_background(sub) -> None:
    p = sub.add_parser("background", help="save site audio with none of the labels, for training with --background")
    bsub = p.add_subparsers(dest="background_command", metavar="ACTION", required=True)
    r = bsub.add_parser("record", help="record the microphone (or --file) into WAV segments under --out")
    r.add_argument("--out", required=True, metavar="DIR", help="folder for the WAV segments (created if needed)")
    r.add_argument("--minutes", type=float, default=10.0, help="how much audio to save (default: 10)")
    r.add_argument("--device", default=None, metavar="ID", help="input device index or name (default: the default input)")
    r.add_argument("--file", default=None, metavar="PATH", help="take the audio from a recording instead of a microphone")
    r.add_argument("--rate", type=int, default=None, metavar="HZ",
                   help="microphone sample rate to ask for (default: the default model's rate, else what the device offers)")
    r.add_argument("--segment-seconds", type=float, default=60.0, metavar="SECONDS",
                   help="length of each WAV file (default: 60)")
    r.set_defaults(func=cmd_background_record)


def cmd_background_record(args) -> int:
    import time

    from runtime.audio.record import record_background
    from runtime.audio.sources import FileSource, MicSource
    from runtime.errors import FieldearError
    from runtime.field.signals import Signals

    if args.minutes <= 0 or args.segment_seconds <= 0:
        raise FieldearError("--minutes and --segment-seconds must be > 0")
    if args.file:
        source = FileSource(args.file)
    else:
        source = MicSource(device=_device_arg(args.device), model_rate=args.rate or _default_model_rate())
    signals = args.signals if getattr(args, "signals", None) is not None else Signals().install()
    log.info("recording %.1f min of site audio from %s into %s (Ctrl-C stops early, keeping what is saved)",
             args.minutes, source.name, args.out)
    done = record_background(source, args.out, args.minutes * 60.0, args.segment_seconds, stop=signals.stop,
                             stamp=time.strftime("%Y%m%dT%H%M%S"))
    print(f"saved {done.seconds:.1f} s at {done.rate} Hz in {len(done.files)} file(s) under {args.out}")
    return 0 if done.files else 1


def _default_model_rate() -> int | None:
    """The default model's sample rate, read from its model.json only (no file hashing: only the rate is needed)."""
    from runtime.errors import FieldearError
    from runtime.model.bundle import load_bundle

    try:
        return int(load_bundle(verify_files=False).frontend.sample_rate)
    except FieldearError:  # no usable default model: the device's own rate will do
        return None


def _register_listen(sub) -> None:
    p = sub.add_parser("listen", help="classify a microphone (or --file) continuously and log what is heard")
    p.add_argument("--config", default=None, help="TOML config (see firmware_tools/fieldear.example.toml)")
    p.add_argument("--model", default=None, help="model bundle directory (default: the bundled default model)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads")
    src = p.add_argument_group("audio")
    src.add_argument("--file", default=None, help="replay this recording instead of a microphone; exits at its end")
    src.add_argument("--realtime", action="store_true", help="with --file: pace the replay at real time")
    src.add_argument("--speed", type=float, default=1.0, metavar="X",
                     help="with --realtime: replay at X times real time (default: 1)")
    src.add_argument("--device", default=None, help="input device index or name (`fieldear devices`)")
    src.add_argument("--sample-rate", type=int, default=None, help="capture rate (default: the model's if the device has it)")
    det = p.add_argument_group("detection")
    det.add_argument("--threshold", action="append", default=[], metavar="LABEL=X",
                     help="per-label threshold (repeatable); default: the bundle's F1-optimal thresholds")
    det.add_argument("--default-threshold", type=float, default=None, help="threshold for labels without one")
    det.add_argument("--smoothing", type=int, default=None, help="moving average over N blocks (default: 1)")
    det.add_argument("--hysteresis", type=float, default=None, help="off threshold = threshold - this (default: 0.1)")
    det.add_argument("--min-event", type=float, default=None, dest="min_event_s", help="minimum event seconds")
    det.add_argument("--merge-gap", type=float, default=None, dest="merge_gap_s", help="merge events of a label closer than this (s)")
    det.add_argument("--ignore", action="append", default=[], metavar="LABEL",
                     help="never report this label as an event (e.g. background; repeatable)")
    det.add_argument("--block-hop", type=int, default=None, help="frames between blocks (default: the bundle's)")
    st = p.add_argument_group("log")
    st.add_argument("--db", default=None, help="log database (default: $FIELDEAR_DATA_DIR or ~/.local/share/fieldear, fieldear.db)")
    st.add_argument("--data-dir", default=None, help="data directory for the default database and clips")
    st.add_argument("--device-id", default=None, help="this device's id in the log (default: from /etc/machine-id)")
    st.add_argument("--window-every", type=int, default=None, help="log every Nth block's scores (default: 1)")
    st.add_argument("--no-windows", action="store_true", help="do not log block scores, only events")
    st.add_argument("--keep-days", type=float, default=None, help="delete log rows older than this")
    st.add_argument("--max-db-mb", type=float, default=None, help="keep the log under this size (oldest first, windows before events)")
    st.add_argument("--clips", action="store_true", default=None, help="save each event's audio as WAV next to the log")
    st.add_argument("--clip-quota-mb", type=float, default=None, help="disk quota for clips (oldest deleted first)")
    out = p.add_argument_group("output")
    out.add_argument("--summary", action="store_true", help="at the end, print the events heard as a table")
    out.add_argument("--json", action="store_true", help="at the end, print the run summary as JSON")
    fl = p.add_argument_group("fleet (MQTT)")
    fl.add_argument("--mqtt", default=None, metavar="HOST:PORT",
                    help="send events and heartbeats to this MQTT broker (default: [mqtt] host of --config)")
    fl.add_argument("--drain-timeout", type=float, default=None, metavar="S",
                    help="at the end, wait at most S s for the outbox to empty (default: 10 with --file, else 0)")
    fl.add_argument("--ha-discovery", action="store_true",
                    help="publish Home Assistant MQTT discovery config (retained)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (needs fieldear[metrics]; default: [metrics] port of --config, else none)")
    p.set_defaults(func=cmd_listen)


def _register_log_reading(sub) -> None:
    p = sub.add_parser("events", help="show logged events")
    p.add_argument("--db", default=None, help="log database (default: the data dir's fieldear.db)")
    p.add_argument("--since", default=None, help="e.g. 30m, 1h, 2d or an ISO time")
    p.add_argument("--label", default=None, help="only events of this label")
    p.add_argument("--limit", type=int, default=50, help="at most this many (latest; 0 = all)")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("export", help="export logged events, block scores, health rows or reviews as CSV or JSON lines")
    p.add_argument("--db", default=None, help="log database (default: the data dir's fieldear.db)")
    p.add_argument("--what", choices=("events", "windows", "health", "reviews"), default="events",
                   help="events, block scores (windows), health rows or reviews")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="CSV or JSON lines")
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


def listen_options(args):
    """The command line as typed listen settings (flags not given stay None: the config file's value)."""
    from pathlib import Path

    from runtime.detect.thresholds import parse_label_thresholds
    from runtime.listen.program import ListenOptions

    path = lambda v: Path(v) if v is not None else None  # noqa: E731
    overrides = dict(
        model=args.model, threads=args.threads, device=args.device, sample_rate=args.sample_rate,
        block_hop=args.block_hop, threshold=args.default_threshold,
        thresholds=parse_label_thresholds(args.threshold, "--threshold") or None, ignore=args.ignore or None,
        smoothing=args.smoothing, hysteresis=args.hysteresis, min_event_s=args.min_event_s,
        merge_gap_s=args.merge_gap_s, db=args.db, log_windows=False if args.no_windows else None,
        window_every=args.window_every, keep_days=args.keep_days, max_db_mb=args.max_db_mb, clips=args.clips,
        clip_quota_mb=args.clip_quota_mb, metrics_port=args.metrics_port)
    return ListenOptions(config=path(args.config), device_id=args.device_id, data_dir=path(args.data_dir),
                         overrides=overrides, file=path(args.file), realtime=args.realtime, speed=args.speed,
                         mqtt=args.mqtt, drain_timeout_s=args.drain_timeout, ha_discovery=args.ha_discovery)


def cmd_listen(args) -> int:
    from runtime.field.signals import Signals
    from runtime.listen.program import run

    # main() installed them before its imports when it saw `listen`; else first thing here
    signals = args.signals if getattr(args, "signals", None) is not None else Signals().install()
    summary = run(listen_options(args), signals, started=_licence_notice)
    _print_summary(summary, args)
    return 1 if summary["dropped_rows"] else 0  # rows lost (full disk): not a clean run


def _licence_notice(listener) -> None:
    """The bundle's non-commercial notice (runtime.model.bundle.licence_notice), as predict and serve print it."""
    from runtime.cli.notices import print_licence_notice

    print_licence_notice("listen", listener.model.bundle.licence_notice)


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
        from runtime.store.queries import find_run, run_events
        from runtime.store.schema import connect

        conn = connect(summary["db"], readonly=True)
        try:
            rows = run_events(conn, find_run(conn, summary["run"]))
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
