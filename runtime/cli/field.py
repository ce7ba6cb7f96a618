"""`fieldear config check FILE` and `fieldear status`. Imports nothing heavy at import time."""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.paths import SYSTEM_CONFIG, system_db_path

log = logging.getLogger(__name__)

SERVICE = "fieldear"


def register(sub) -> None:
    p = sub.add_parser("config", help="check a TOML configuration file")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("check", help="validate FILE (and the model bundle it names); exit 0 when usable")
    c.add_argument("file", help=f"the TOML file, e.g. {SYSTEM_CONFIG}")
    c.add_argument("--model", default=None, help="check with this bundle instead of the file's [model] path")
    c.add_argument("--no-model", action="store_true", help="do not load the model bundle")
    c.add_argument("--print", action="store_true", dest="print_config", help="print the effective configuration as JSON")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("status", help="is the service running? last event, overruns, disk, CPU temperature")
    p.add_argument("--db", default=None, help=f"log database (default: the --config's, else {system_db_path()} if present, "
                   "else the user data dir's)")
    p.add_argument("--config", default=None, help="TOML config (for the database path and heartbeat interval)")
    p.add_argument("--json", action="store_true", help="machine-readable output (what `fieldear deploy` checks)")
    p.add_argument("--service", default=SERVICE, help=f"systemd unit name (default: {SERVICE})")
    p.set_defaults(func=cmd_status)


# ---------------------------------------------------------------- config check


def cmd_config_check(args) -> int:
    import json

    from runtime.config import apply_overrides, check_labels, load_config

    config = load_config(args.file)
    if args.model:
        config = apply_overrides(config, model=args.model)
    model_text = "not checked"
    if not args.no_model:
        from runtime.model.bundle import load_bundle
        from runtime.paths import DEFAULT_BUNDLE

        path = Path(config.model.path) if config.model.path is not None else DEFAULT_BUNDLE
        if path.exists():
            bundle = load_bundle(path)
            check_labels(config, bundle.labels)
            model_text = f"{bundle.name} ({bundle.short_sha}, {len(bundle.labels)} labels) at {bundle.path}"
        else:  # e.g. the example config on a laptop: not an error until `listen` needs the bundle
            log.warning("model directory %s does not exist (yet): labels in the config are not checked; "
                        "`listen` will refuse to start without it", path)
            model_text = f"not found: {path}"
    if config.mqtt.password_file is not None:
        config.mqtt.read_password()
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
    mqtt = (f"{config.mqtt.host}:{config.mqtt.effective_port}{' (tls)' if config.mqtt.tls else ''}"
            if config.mqtt.enabled else "off (no network)")
    print(f"{args.file}: OK")
    print(f"  device   {config.device_id}" + (f" ({config.device.location})" if config.device.location else ""))
    print(f"  model    {model_text}")
    print(f"  log      {config.store.db_path}")
    print(f"  mqtt     {mqtt}")
    web = config.web
    from runtime.web.settings import is_loopback

    if not is_loopback(web.host) and web.password_file is None:
        log.warning("[web] host = %s without password_file: `fieldear serve` (and `service install --web`) will "
                    "refuse to start; make one with `fieldear serve --hash-password`", web.host)
    print(f"  web      {web.host}:{web.port} (`fieldear serve`; "
          f"{'password file ' + str(web.password_file) if web.password_file else 'no password'})")
    return 0


# ---------------------------------------------------------------- status


def _default_db(config):

    from runtime.paths import default_db_path, system_db_path

    if config is not None:
        return config.store.db_path
    field = system_db_path()
    return field if field.exists() else default_db_path()


def cmd_status(args) -> int:
    import json
    import time
    from pathlib import Path

    from runtime.config import load_config
    from runtime.field.status import collect_status, format_status

    config = load_config(args.config) if args.config else None
    db = Path(args.db) if args.db else _default_db(config)
    every_s = config.health.every_s if config is not None else None
    status = collect_status(db, now=time.time(), service=args.service, every_s=every_s)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return 0 if status["ok"] else 3
