"""CLI for the fleet area: ``outbox send|status``, ``collect``, ``report``. Imports nothing heavy."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("outbox", help="the device's outbox of events for the MQTT broker",
                       description="The device log is the outbox: events are sent from it in order and count as "
                       "done only once the collector acknowledged storing them (not on the broker's PUBACK).")
    osub = p.add_subparsers(dest="outbox_command", metavar="ACTION")
    send = osub.add_parser("send", help="one shot: send what is pending, then exit with counts",
                           description="Connect, send every pending event, health row and review (QoS 1), wait for "
                           "the collector's acknowledgements (re-sending what is not acknowledged in time), exit. "
                           "Exit status 0 when nothing is left pending, 1 otherwise (e.g. no collector running).")
    send.add_argument("--db", required=True, help="the device log (SQLite)")
    send.add_argument("--mqtt", metavar="HOST:PORT", help="the broker (default: [mqtt] host/port of --config)")
    send.add_argument("--config", help="device config (TOML): [mqtt] TLS, credentials, topic prefix; [device] id")
    send.add_argument("--device-id", help="device id in topics and message ids (default: config, else the log's)")
    send.add_argument("--timeout", type=float, default=30.0, metavar="S", help="give up after S seconds (30)")
    send.set_defaults(func=cmd_outbox_send)
    st = osub.add_parser("status", help="per stream: acknowledged up to which id, how many rows not acknowledged")
    st.add_argument("--db", required=True, help="the device log (SQLite)")
    st.set_defaults(func=cmd_outbox_status)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])

    c = sub.add_parser("collect", help="central: store every device's events from the broker in one database",
                       description="Subscribe to <prefix>/+/events, /health, /reviews and /status (QoS 1, persistent session) "
                       "and store them in the central database (a SQLite file, or PostgreSQL for --db postgresql://...), each event "
                       "once. Runs until SIGINT/SIGTERM.")
    c.add_argument("--broker", metavar="HOST:PORT", help="the broker (default: [mqtt] of --config)")
    c.add_argument("--db", required=True,
                   help="the central database: a SQLite file (created if missing) or postgresql://USER@HOST:PORT/DB "
                        "(needs fieldear[postgres]; tables created/migrated)")
    c.add_argument("--config", help="config (TOML) whose [mqtt] section gives TLS, credentials, topic prefix")
    c.add_argument("--client-id", default="fieldear-collector",
                   help="MQTT client id; keep it stable so the broker queues messages while away")
    c.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://ADDR:PORT/metrics (needs fieldear[metrics])")
    c.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                   help="address of the metrics endpoint (default 127.0.0.1; 0.0.0.0 for a remote Prometheus)")
    c.set_defaults(func=cmd_collect)

    r = sub.add_parser("report", help="summarise the central database per device, label or day")
    r.add_argument("--db", required=True,
                   help="the central database written by `fieldear collect` (SQLite file or postgresql:// URL)")
    r.add_argument("--by", choices=("device", "label", "day"), default="device", help="one row per device, label or day")
    r.set_defaults(func=cmd_report)


def _mqtt_section(config_path: str | None):
    if not config_path:
        return None, None
    from runtime.config import load_config

    config = load_config(config_path)
    return config.mqtt, config


def settings_from_args(hostport: str | None, config_path: str | None):
    from runtime.fleet.mqtt import MqttSettings

    section, config = _mqtt_section(config_path)
    return MqttSettings.from_config(section, hostport), config


def cmd_outbox_send(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.errors import FieldearError
    from runtime.fleet import outbox
    from runtime.fleet.mqtt import BrokerUnavailable, send_pending

    if not Path(args.db).exists():
        raise FieldearError(f"no device log at {args.db}", hint="give the --db that `fieldear listen` writes")
    settings, config = settings_from_args(args.mqtt, args.config)
    device_id = args.device_id or (config.device.id if config is not None else None)
    if not device_id:
        conn = outbox.connect(args.db)
        try:
            ids = outbox.store_device_ids(conn)
        finally:
            conn.close()
        if len(ids) != 1:
            raise FieldearError(
                f"cannot tell the device id from {args.db} (found {len(ids)}: {', '.join(ids) or 'none'})",
                hint="give --device-id",
            )
        device_id = ids[0]
    try:
        result = send_pending(args.db, settings, device_id, timeout_s=args.timeout)
    except BrokerUnavailable as exc:
        conn = outbox.connect(args.db)
        try:
            st = outbox.status(conn)
        finally:
            conn.close()
        raise BrokerUnavailable(
            f"{exc.message}; {st.pending['events']} events, {st.pending['health']} health rows and "
            f"{st.pending['reviews']} reviews stay pending",
            exc.hint,
        ) from None
    st = result.status
    resent = sum(result.resent.values())
    print(
        f"sent {result.acked['events']} events, {result.acked['health']} health rows and {result.acked['reviews']} "
        f"reviews to {settings.address} as {device_id}, acknowledged by the collector"
        f"{f' ({resent} sent again)' if resent else ''}; pending (not acknowledged): {st.pending['events']} events, "
        f"{st.pending['health']} health rows, {st.pending['reviews']} reviews"
    )
    return 0 if st.total_pending == 0 else 1


def cmd_outbox_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.errors import FieldearError
    from runtime.fleet import outbox

    if not Path(args.db).exists():
        raise FieldearError(f"no device log at {args.db}")
    conn = outbox.connect(args.db)
    try:
        st = outbox.status(conn)
    finally:
        conn.close()
    for stream in outbox.STREAMS:
        oldest = f", oldest {st.oldest_utc[stream]}" if st.oldest_utc.get(stream) else ""
        print(f"{stream:8s} acknowledged up to id {st.cursors[stream]}, pending {st.pending[stream]}{oldest}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from runtime.field.signals import Signals
    from runtime.fleet.central.collector import Collector

    signals = Signals().install()
    server = None
    try:
        settings, _ = settings_from_args(args.broker, args.config)
        collector = Collector(args.db, settings, client_id=args.client_id)
        if args.metrics_port is not None:
            from runtime.fleet.central.metrics import start_metrics_server

            server = start_metrics_server(collector, args.metrics_port, args.metrics_addr)
            print(f"metrics on http://{args.metrics_addr}:{server.server_address[1]}/metrics", flush=True)
        stats = collector.run(signals.stop)
    finally:
        if server is not None:
            server.shutdown()
        signals.restore()
    print(
        f"collected {stats.events} events, {stats.health} health messages and {stats.reviews} reviews from {len(stats.by_device)} devices "
        f"into {collector.db_name}; {stats.duplicates} redelivered duplicates ignored, {stats.conflicts} conflicts, "
        f"{stats.rejected} rejected; {stats.acks_sent} acks sent for {stats.acked_rows} rows"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from runtime.fleet.central.report import format_table, report_rows

    header, rows = report_rows(args.db, args.by)
    print(format_table(header, rows))
    return 0
