"""`fieldear review`. Imports nothing heavy at import time."""

from __future__ import annotations

import logging

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
