"""`fieldear serve`: the review page (the optional ``web`` extra). Imports nothing heavy at import time."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("serve", help="the field review page in a browser: live status, detections, review",
                       description="Serve the web pages and JSON API (docs/web.md) over the device log. Binds "
                       "127.0.0.1 unless --host (or [web] host) says otherwise; any other address needs "
                       "--password-file. Needs the web extra: pip install 'fieldear[web]'.")
    p.add_argument("--config", default=None, help="TOML config ([web], [store], [model], [health])")
    p.add_argument("--db", default=None, help="log database (default: the --config's, else the data dir's)")
    p.add_argument("--host", default=None, help="address to bind (default: [web] host, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: [web] port, else 8080)")
    p.add_argument("--password-file", default=None, metavar="FILE",
                   help="file with a password hash from --hash-password (required off loopback)")
    p.add_argument("--service", default="fieldear", help="the listen unit the live page reports on")
    p.add_argument("--projects", default=None, metavar="DIR",
                   help="the studio's projects root (default: [web] projects): serves /studio (docs/studio.md); "
                   "the log is then optional. Needs the train extra")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password (prompt, or one line on stdin) and print its hash for --password-file")
    p.set_defaults(func=cmd_serve)


def _read_password() -> str:
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            from runtime.errors import FieldearError

            raise FieldearError("the passwords differ", "run it again")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_serve(args) -> int:
    from pathlib import Path

    if args.hash_password:
        from runtime.web.passwords import hash_password

        print(hash_password(_read_password()))
        return 0
    from runtime.web import require_web

    require_web()
    from runtime.config import default_config, load_config
    from runtime.errors import FieldearError
    from runtime.web.settings import settings_for

    config = load_config(args.config) if args.config else default_config()
    studio = bool(args.projects or config.web.projects)
    if studio:
        from runtime.web.retrain import missing_train_modules

        missing = missing_train_modules()
        if missing:
            raise FieldearError(f"the studio (--projects) needs the train extra (missing: {', '.join(missing)})",
                                "pip install 'fieldear[train]'")
    db = Path(args.db) if args.db else None
    if db is None and not args.config:
        from runtime.cli.field import _default_db

        db = _default_db(None)
        if studio and not db.is_file():
            db = None
    settings = settings_for(config, db=db, host=args.host, port=args.port,
                            password_file=Path(args.password_file) if args.password_file else None,
                            service=args.service, projects=Path(args.projects) if args.projects else None,
                            need_db=not studio or bool(args.db))
    if settings.db is not None and not settings.db.is_file():
        raise FieldearError(f"no log database at {settings.db}", "pass --db PATH or run `fieldear listen` first")
    if settings.projects is not None:
        settings.projects.mkdir(parents=True, exist_ok=True)
    from runtime.cli.notices import print_licence_notice
    from runtime.model.licences import read_licence_notice
    from runtime.web.server import serve

    print_licence_notice("serve", read_licence_notice(settings.model))
    serve(settings)
    return 0
