"""A long job in a child process that outlives the browser tab and the server: one at a time per state file.

The state (argv, pid, times, status, the job's own fields) is a JSON file and the child's output goes to a log
file beside it, so a restarted server or a closed browser finds the job again. The child runs in its own process
group (``start_new_session``), so cancelling stops it and everything it started. Used by the Model page's retrain
(runtime.web.retrain) and the studio's train and batch jobs (convert.studio.jobs).

Standard library only (the server keeps numpy out).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from runtime.errors import FieldearError

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 12
CANCEL_GRACE_S = 10.0  # SIGTERM first; SIGKILL for a child group still running after this


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def exited_ok(state: dict, code: int | None) -> bool:
    """The default verdict on an ended child: exit status 0 (None: not our child, so unknown, taken as ok)."""
    return code in (0, None)


class ChildJob:
    """The job whose state lives in ``state_file``. ``succeeded(state, returncode)`` decides done or failed when the
    child has ended (returncode None when this process did not start it); ``what`` names the job in messages."""

    def __init__(self, state_file: Path, what: str, clock: Callable[[], float] = time.time,
                 popen: Callable = subprocess.Popen, succeeded: Callable[[dict, int | None], bool] = exited_ok,
                 sleep: Callable[[float], None] = time.sleep):
        self.state_file = Path(state_file)
        self.what = what
        self.clock = clock
        self.popen = popen
        self.succeeded = succeeded
        self.sleep = sleep
        self._child = None  # the Popen of a job this process started (reaped by read())

    def read(self) -> dict | None:
        """The latest job's state; a running job whose child has ended is settled as done or failed first."""
        state = read_json(self.state_file)
        if state is None:
            return None
        if state.get("status") != "running" and self._child is not None and self._child.poll() is not None:
            self._child = None  # ended after another server object cancelled it: reaped
        if state.get("status") == "running" and self._ended(state):
            code = self._child.returncode if self._child is not None else None
            self._child = None
            state["status"] = "done" if self.succeeded(state, code) else "failed"
            state["ended"] = self.clock()
            state["ended_utc"] = utc(state["ended"])
            write_json(self.state_file, state)
            log.info("%s %s %s", self.what, state.get("version", ""), state["status"])
        if state.get("status") == "running":
            state["elapsed_s"] = round(self.clock() - state["started"], 1)
        return state

    def _ended(self, state: dict) -> bool:
        if self._child is not None and self._child.pid == state.get("pid"):
            return self._child.poll() is not None
        pid = int(state["pid"])
        return not alive(pid) or _zombie(pid)

    def running(self) -> dict | None:
        state = self.read()
        return state if state is not None and state["status"] == "running" else None

    def start(self, argv: list[str], log_path: Path, hint: str, cwd: Path | None = None, env: dict | None = None,
              **fields) -> dict:
        """Start ``argv`` with its output in ``log_path``; refused while a job of this state file runs."""
        state = self.running()
        if state is not None:
            raise FieldearError(f"a {self.what} is already running (started {state['started_utc']})", hint)
        now = self.clock()
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as logf:
            self._child = self.popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=cwd, env=env)
        state = {**fields, "status": "running", "pid": self._child.pid, "started": now, "started_utc": utc(now),
                 "log": str(log_path), "argv": argv}
        write_json(self.state_file, state)
        log.info("%s started (pid %d): %s", self.what, self._child.pid, " ".join(argv))
        return self.read()

    def cancel(self) -> dict:
        """Stop the running job's whole process group (SIGTERM, then SIGKILL after a grace time); status cancelled."""
        state = self.running()
        if state is None:
            raise FieldearError(f"no {self.what} is running", "nothing to cancel")
        pid = int(state["pid"])
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = self.clock() + CANCEL_GRACE_S
        while self._group_alive(pid) and self.clock() < deadline:
            self.sleep(0.1)
        if self._group_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._child is not None:
            self._child.wait(timeout=CANCEL_GRACE_S)
            self._child = None
        state = read_json(self.state_file) or state
        state["status"] = "cancelled"
        state["ended"] = self.clock()
        state["ended_utc"] = utc(state["ended"])
        write_json(self.state_file, state)
        log.info("%s %s cancelled", self.what, state.get("version", ""))
        return state

    def _group_alive(self, pgid: int) -> bool:
        if self._child is not None and self._child.pid == pgid and self._child.poll() is None:
            return True
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _zombie(pgid)  # ended, waiting for its parent (another server object) to reap it


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
