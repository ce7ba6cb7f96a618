"""`fieldear review` and `fieldear serve`. Imports nothing heavy at import time (the web framework only
when `serve` runs)."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("review", help="record a verdict on a logged event: confirm, reject or relabel",
                       description="Store a review of one event in the device log (insert-only; the newest review "
                       "of an event is its verdict). It is sent to the collector through the outbox.")
    p.add_argument("event_id", type=int, metavar="EVENT_ID", help="the event's id (see `fieldear events`)")
    p.add_argument("verdict", choices=("confirm", "reject", "relabel"), help="confirm, reject or relabel")
    p.add_argument("label", nargs="?", default=None, metavar="LABEL",
                   help="with relabel: the right label, or background")
    p.add_argument("--db", default=None, help="log database (default: the data dir's fieldear.db)")
    p.add_argument("--by", default=None, metavar="NAME", help="reviewer name (default: the login name)")
    p.set_defaults(func=cmd_review)

    s = sub.add_parser("serve", help="the review web app: live status, detections, review, counts, health",
                       description="Serve the device log in a browser (needs the web extra: pip install "
                       "'fieldear[web]'). Binds 127.0.0.1 unless --host is given with --password-file.")
    s.add_argument("--db", default=None, help="log database (default: the data dir's fieldear.db)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind; other than loopback needs --password-file")
    s.add_argument("--port", type=int, default=8080, help="TCP port")
    s.add_argument("--password-file", default=None, metavar="FILE",
                   help="file with the password's scrypt hash (write it with --set-password)")
    s.add_argument("--set-password", action="store_true",
                   help="read a password (prompt, or stdin when not a terminal), write its hash to --password-file, exit")
    s.add_argument("--threads", type=int, default=2, help="request threads")
    s.set_defaults(func=cmd_serve)


def cmd_review(args) -> int:
    import getpass

    from runtime.cli.listen import _db_arg
    from runtime.store.reviews import Review, add_review
    from runtime.store.schema import connect

    db = _db_arg(args.db)
    if not db.is_file():
        from runtime.errors import FieldearError

        raise FieldearError(f"no log database at {db}", "pass --db PATH or run `fieldear listen` first")
    conn = connect(db)
    try:
        row = add_review(conn, Review(args.event_id, args.verdict, args.by or getpass.getuser(), args.label))
    finally:
        conn.close()
    print(f"review {row['id']}: event {row['event_id']} {row['verdict']} -> {row['label']} by {row['reviewer']}")
    return 0


def cmd_serve(args) -> int:
    from runtime.cli.listen import _db_arg
    from runtime.web.settings import ServeSettings, read_new_password, write_password_file

    if args.set_password:
        from runtime.errors import FieldearError

        if not args.password_file:
            raise FieldearError("--set-password needs --password-file FILE")
        write_password_file(args.password_file, read_new_password(sys.stdin))
        log.info("wrote the password hash to %s", args.password_file)
        return 0
    settings = ServeSettings(db=_db_arg(args.db), host=args.host, port=args.port,
                             password_file=args.password_file, threads=args.threads).checked()
    from runtime.web.server import serve  # the web framework: only here

    serve(settings)
    return 0
