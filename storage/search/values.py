"""Search values: text normalisation, FHIR date ranges, reference splitting.

Shared by index extraction (what is stored) and query parsing (what is asked),
so that both sides compare like with like.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone

MIN_INSTANT = -(2**62)
MAX_INSTANT = 2**62
# Widths of the index columns (storage/tables.py). Longer values are cut to fit,
# and query values are cut the same way so that they still find them.
CODE_WIDTH = 256  # token system and code, normalized string
TEXT_WIDTH = 1024  # exact string, reference target id
TYPE_WIDTH = 64


def normalize_text(value: str) -> str:
    """Case- and accent-insensitive form used by the default string search."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})"
    r"(T(?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def date_range(text: str) -> tuple[int, int]:
    """The half-open range [low, high) in epoch microseconds a FHIR date denotes.

    ``2023`` covers the whole year, ``2023-05-01T10:00Z`` one minute and
    ``...:00.5Z`` a tenth of a second: the precision given is the range. A
    value without a time zone is taken as UTC. Raises ValueError on a bad value.
    """
    match = _DATE_RE.match(text.strip())
    if not match:
        raise ValueError(f"not a FHIR date, dateTime or instant: {text!r}")
    g = match.groupdict()
    year = int(g["y"])
    if g["m"] is None:
        start = datetime(year, 1, 1, tzinfo=UTC)
        return to_micros(start), _months_later(start, 12)
    month = int(g["m"])
    if g["d"] is None:
        start = datetime(year, month, 1, tzinfo=UTC)
        return to_micros(start), _months_later(start, 1)
    day = date(year, month, int(g["d"]))
    if g["H"] is None:
        low = to_micros(datetime(day.year, day.month, day.day, tzinfo=UTC))
        return low, low + 86_400_000_000
    tz: timezone = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    if g["S"] is None:
        low = to_micros(datetime(day.year, day.month, day.day, int(g["H"]), int(g["M"]),
                                 tzinfo=tz))
        return low, low + 60_000_000
    digits = (g["f"] or ".")[1:7]
    low = to_micros(datetime(day.year, day.month, day.day, int(g["H"]), int(g["M"]),
                             int(g["S"]), int(digits.ljust(6, "0")), tzinfo=tz))
    return low, low + 10 ** (6 - len(digits))


def _months_later(start: datetime, months: int) -> int:
    """Integer arithmetic, so ranges ending after year 9999 do not overflow ``datetime``."""
    index = start.year * 12 + start.month - 1 + months
    if index // 12 > _END_OF_TIME.year:
        return to_micros(_END_OF_TIME) + 1
    return to_micros(start.replace(year=index // 12, month=index % 12 + 1))


def split_reference(reference: str) -> tuple[str | None, str]:
    """``Patient/1`` -> ("Patient", "1"); anything else -> (None, reference)."""
    path = reference
    if "://" in reference:
        path = reference.split("://", 1)[1]
    parts = path.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    typed = (len(parts) >= 2 and parts[-2][:1].isupper() and parts[-2].isalpha()
             and len(parts[-2]) <= TYPE_WIDTH)
    if typed and ("://" in reference or len(parts) == 2):
        return parts[-2], parts[-1]
    return None, reference
