"""The log formats and the logging set-up each process makes."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from service.ops.logs import REQUEST_ID, JsonFormatter, TextFormatter, configure_logging


def record(message: str, *args: object, fields: dict[str, object] | None = None,
           exc_info: bool = False) -> logging.LogRecord:
    made = logging.LogRecord("carnet.test", logging.WARNING, __file__, 1, message, args,
                             sys.exc_info() if exc_info else None)
    made.request_id = REQUEST_ID.get()  # as the record factory configure_logging sets
    if fields is not None:
        made.fields = fields
    return made


def test_json_lines_carry_the_fields_and_the_request_id() -> None:
    token = REQUEST_ID.set("req-1")
    try:
        made = record("took %d ms", 12, fields={"route": "/health"})
    finally:
        REQUEST_ID.reset(token)
    line = JsonFormatter().format(made)  # formatted after the request: the id stays
    entry = orjson.loads(line)
    assert "\n" not in line
    assert entry["message"] == "took 12 ms"
    assert entry["level"] == "warning"
    assert entry["logger"] == "carnet.test"
    assert entry["request_id"] == "req-1"
    assert entry["route"] == "/health"
    assert entry["time"].endswith("Z") and len(entry["time"]) == 24


def test_a_line_outside_a_request_has_no_request_id() -> None:
    assert "request_id" not in orjson.loads(JsonFormatter().format(record("start")))


def test_an_exception_stays_on_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        line = JsonFormatter().format(record("failed", exc_info=True))
    assert "\n" not in line
    assert "ValueError: bad\nvalue" in orjson.loads(line)["exception"]


def test_the_text_format_says_the_same_facts() -> None:
    line = TextFormatter().format(record("request", fields={"status": 200}))
    assert line.endswith("WARNING carnet.test request status=200")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_configuring_twice_leaves_one_handler_and_quiets_url_loggers(log_format: str) -> None:
    root = logging.getLogger()
    level = root.level
    try:
        configure_logging("debug", log_format)
        configure_logging("info", log_format)
        ours = [h for h in root.handlers if h.get_name() == "carnet"]
        assert len(ours) == 1
        wanted = JsonFormatter if log_format == "json" else TextFormatter
        assert isinstance(ours[0].formatter, wanted)
        assert root.level == logging.INFO
        # httpx would log each URL it calls (the portal's searches carry an INS)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        token = REQUEST_ID.set("req-2")
        try:
            made = logging.getLogger("carnet.test").makeRecord(
                "carnet.test", logging.INFO, __file__, 1, "x", (), None)
        finally:
            REQUEST_ID.reset(token)
        assert made.request_id == "req-2"
    finally:
        root.setLevel(level)
