"""``fieldear train --progress FILE``: every log record of the run, with its wall time, as one JSON line.

The studio's train page reads the file while the run goes on (convert.studio.train_job.progress_from) to show
the stage, the candidate, the fold and the time left within the time budget, without parsing the console log.
"""

from __future__ import annotations

import json
import logging
import os


class ProgressFile(logging.Handler):
    """A logging handler appending ``{"t": unix time, "level": "INFO", "message": ...}`` lines, flushed each time."""

    def __init__(self, path: str | os.PathLike, level: int = logging.INFO):
        super().__init__(level)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps({"t": round(record.created, 3), "level": record.levelname, "message": record.getMessage()})
            self.file.write(line + "\n")
            self.file.flush()
        except Exception:  # noqa: BLE001 - logging must not break the run
            self.handleError(record)

    def close(self) -> None:
        self.file.close()
        super().close()
