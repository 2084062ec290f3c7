"""billhive's log output: ``text`` (the default) or ``json`` (one object a line), and the
request id every line of a request carries.

``configure(fmt)`` is called once by the ``billhive`` command (``--log-format`` /
``BILLHIVE_LOG_FORMAT``). A log call's ``extra={...}`` fields (``site``, ``job_id``,
``event_id``, ...) are kept: as keys of the JSON object, or as ``key=value`` after a text
line's message. While a request is served its id is in ``REQUEST_ID`` and every line logged
meanwhile carries it as ``request_id``.

Libraries' chatter is kept out of the default output: Alembic's ``setup plugin`` lines on
every command and fontTools' subsetting lines on every PDF (they still log warnings)."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson

FORMATS = ("text", "json")
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("billhive_request_id", default=None)
# loggers whose INFO lines are noise for an operator: raised to WARNING
QUIET = ("alembic", "fontTools", "fpdf", "httpx", "httpcore", "uvicorn.access")
# the attributes every LogRecord has: anything else on a record came from extra={...}
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName",
                                                                            "color_message"}


def configure(fmt: str = "text", level: int | str = logging.INFO, stream: Any = None) -> None:
    """Send every log line to ``stream`` (default stderr) in ``fmt``; quiet the noisy libraries."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(with_request_id)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The extra fields of a record (``extra={...}`` and the request id), in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


class TextFormatter(logging.Formatter):
    """``2026-01-02 10:00:00,123 INFO billhive.http: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields(record)
        if not extra:
            return line
        head, sep, tail = line.partition("\n")  # a traceback stays below the first line
        return head + "".join(f" {k}={_text(v)}" for k, v in extra.items()) + sep + tail


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, the extra
    fields, and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in fields(record).items():
            out.setdefault(k, v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def with_request_id(record: logging.LogRecord) -> bool:
    if getattr(record, "request_id", None) is None:
        rid = REQUEST_ID.get()
        if rid is not None:
            record.request_id = rid
    return True


def _text(value: Any) -> str:
    s = str(value)
    return orjson.dumps(s).decode() if (" " in s or '"' in s or not s) else s
