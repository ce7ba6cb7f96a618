"""runtime.sdnotify: the notify datagram protocol against a real AF_UNIX socket playing systemd."""

from __future__ import annotations

import os
import socket

import pytest

from runtime.field.sdnotify import Notifier, watchdog_interval

pytestmark = pytest.mark.runtime


@pytest.fixture
def systemd_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


def test_messages_arrive_as_systemd_reads_them(systemd_socket):
    path, sock = systemd_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready(status="listening: 0 blocks")
    assert sock.recv(4096) == b"READY=1\nSTATUS=listening: 0 blocks\n"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1\n"
    assert n.status("two\nlines")
    assert sock.recv(4096) == b"STATUS=two lines\n"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1\n"
    n.close()


def test_abstract_socket_name():
    name = f"fieldear-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1\n"
    finally:
        sock.close()


def test_no_op_outside_systemd():
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    assert Notifier({"NOTIFY_SOCKET": "relative/name"}).enabled is False


def test_vanished_socket_is_logged_not_raised(tmp_path, caplog):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.watchdog() is False
    assert n.watchdog() is False
    assert sum("cannot notify systemd" in r.message for r in caplog.records) == 1


def test_watchdog_interval():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000"}).watchdog_s == 2.0


def test_journal_level_prefixes(tmp_path):
    import io
    import logging

    from runtime.field.sdnotify import (
        JournalFormatter,
        stderr_is_journal,
        use_journal_levels,
    )

    f = JournalFormatter("%(levelname)s %(name)s: %(message)s")
    rec = logging.LogRecord("fieldear.x", logging.ERROR, __file__, 1, "no audio\nfor 30 s", None, None)
    assert f.format(rec) == "<3>ERROR fieldear.x: no audio\n<3>for 30 s"
    rec.levelno, rec.levelname = logging.WARNING, "WARNING"
    assert f.format(rec).startswith("<4>WARNING")
    rec.levelno, rec.levelname = logging.INFO, "INFO"
    assert f.format(rec).startswith("<6>INFO")

    log_file = tmp_path / "stderr"
    with open(log_file, "w") as fh:
        st = os.fstat(fh.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, stderr_fd=fh.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "1:2"}, stderr_fd=fh.fileno())
        assert not stderr_is_journal({}, stderr_fd=fh.fileno())
    logger = logging.getLogger("fieldear-test-journal")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    assert not use_journal_levels(logger, environ={})
    logger.warning("plain")
    assert stream.getvalue() == "WARNING fieldear-test-journal: plain\n"
    st2 = os.fstat(2)  # pretend our stderr is the journal stream: handlers get the prefixes
    assert use_journal_levels(logger, environ={"JOURNAL_STREAM": f"{st2.st_dev}:{st2.st_ino}"})
    logger.error("stalled")
    assert stream.getvalue().splitlines()[-1] == "<3>ERROR fieldear-test-journal: stalled"
    logger.removeHandler(handler)
