"""systemd's notify protocol, spoken directly (no dependency).

A service with ``Type=notify`` tells systemd it is ready (``READY=1``), alive (``WATCHDOG=1``,
at least every ``WatchdogSec``), stopping (``STOPPING=1``) and how it is doing (``STATUS=...``)
by sending newline-separated ``KEY=VALUE`` datagrams to the AF_UNIX socket named in
``$NOTIFY_SOCKET``. A name starting with ``@`` is in the Linux abstract namespace. systemd
passes the watchdog interval as ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``: only that process
should feed it). Outside systemd ``$NOTIFY_SOCKET`` is unset and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping

log = logging.getLogger(__name__)


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout in seconds from $WATCHDOG_USEC, or None when no watchdog is enabled for us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring invalid WATCHDOG_USEC=%r", usec)
        return None
    return value / 1e6 if value > 0 else None


class Notifier:
    """Sends notify messages to $NOTIFY_SOCKET (captured at construction); a no-op without it.

    Send failures are logged once per kind and never raised: the listener must not die because
    systemd went away.
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        name = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if name.startswith("@"):
            self.address = b"\0" + name[1:].encode()
        elif name.startswith("/"):
            self.address = name
        elif name:
            log.warning("ignoring NOTIFY_SOCKET=%r (not an absolute path or @abstract name)", name)
        self.watchdog_s = watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send e.g. notify(READY=1, STATUS="listening"). Returns True when a datagram was sent."""
        if self.address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")
            lines.append(f"{key}={text}")
        payload = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# ---------------------------------------------------------------- journald log levels

# syslog priorities journald reads from a "<N>" line prefix on a service's stderr (SyslogLevelPrefix=yes).
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """Prefixes each line with ``<N>`` so journald files it at the record's level (``journalctl -p warning``)."""

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in _PRIORITY if lv <= record.levelno), default=logging.DEBUG)
        prefix = f"<{_PRIORITY[level]}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def stderr_is_journal(environ: Mapping[str, str] | None = None, stderr_fd: int = 2) -> bool:
    """True when stderr is systemd's journal stream ($JOURNAL_STREAM = "device:inode" of our stderr)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stderr_fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def use_journal_levels(logger: logging.Logger | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Under systemd, give the stderr handlers of ``logger`` (root) level prefixes journald understands."""
    if not stderr_is_journal(environ):
        return False
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is not None:
            fmt = handler.formatter._fmt if handler.formatter is not None else "%(levelname)s %(name)s: %(message)s"
            handler.setFormatter(JournalFormatter(fmt))
    return True
