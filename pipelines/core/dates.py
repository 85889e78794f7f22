"""Parts of a timestamp (hour, day of week, month, day of year) as categories, in a stated time zone.

A feature reads a part by naming `<column>.<part>`, e.g. a cross of `time.day_of_week` and
`time.hour`. A timestamp is epoch seconds ("1400269500", or a number) or ISO-8601 text with or
without a zone ("2014-05-16 19:45", "2014-05-16T19:45:00Z", "2014-05-16T14:45:00-05:00"):
- an instant (epoch seconds, or text with a zone) is shown in `input.time_zone`;
- text without a zone is already local time, and is read as it is written.
The same grammar and the same zone table (UTC offsets and their changes, from Python's zoneinfo)
drive both implementations: this one (NumPy over Arrow, for typing rows and entity keys in
preprocess) and the transform graph's (`transforms.dates`), so the SavedModel, serving raw rows,
computes exactly the categories the run's entity keys name.

Parts are strings as a user writes them: hour "00".."23", day_of_week "Mon".."Sun", month
"01".."12", day_of_year "001".."366".
"""
from __future__ import annotations

import datetime
import functools
import re
import zoneinfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PARTS = ("hour", "day_of_week", "month", "day_of_year")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
EPOCH_PATTERN = r"^\s*-?[0-9]+(\.[0-9]*)?\s*$"
ISO_PATTERN = (r"^\s*(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
               r"(?:[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2})(?:\.[0-9]+)?)?"
               r"\s*(?P<zone>Z|[+-][0-9]{2}:?[0-9]{2})?)?\s*$")
TABLE_YEARS = (1900, 2100)
_DAY = 86400


def display_order(value: str) -> tuple:
    """A sort key showing weekday names Mon..Sun first, then shorter before longer, then by text
    (so "9" comes before "10")."""
    return (WEEKDAYS.index(value) if value in WEEKDAYS else len(WEEKDAYS), len(value), value)


def split_reference(column: str) -> tuple[str, str | None]:
    """"time.hour" -> ("time", "hour"); a plain column -> (column, None)."""
    base, dot, part = column.rpartition(".")
    return (base, part) if dot and base and part in PARTS else (column, None)


def check_zone(name: str) -> None:
    """Raises ValueError for a time zone Python's zoneinfo does not know."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'UTC' or 'America/Chicago')") from None


@functools.lru_cache(maxsize=16)
def zone_table(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The zone's UTC offsets from 1900 to 2100: (changes [n] in UTC epoch seconds, offsets [n + 1] in
    seconds), offsets[i] holding from changes[i - 1] up to changes[i]."""
    zone = zoneinfo.ZoneInfo(name)

    def offset(seconds: int) -> int:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).astimezone(zone)
        return int(moment.utcoffset().total_seconds())
    start = int(datetime.datetime(TABLE_YEARS[0], 1, 2, tzinfo=datetime.timezone.utc).timestamp())
    end = int(datetime.datetime(TABLE_YEARS[1], 1, 1, tzinfo=datetime.timezone.utc).timestamp())
    changes, offsets = [], [offset(start)]
    for day in range(start, end, _DAY):
        if offset(day + _DAY) != offsets[-1]:
            low, high = day, day + _DAY   # the change falls in (low, high]: find the minute
            while high - low > 60:
                middle = (low + high) // 2 // 60 * 60
                low, high = (middle, high) if offset(middle) == offsets[-1] else (low, middle)
            changes.append(high)
            offsets.append(offset(high))
    return np.array(changes, np.int64), np.array(offsets, np.int64)


def days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm), int64 arrays."""
    year = year - (month <= 2)
    era = np.floor_divide(year, 400)
    year_of_era = year - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month, day) of days since 1970-01-01 (the inverse of `days_from_civil`)."""
    days = days + 719468
    era = np.floor_divide(days, 146097)
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + np.where(shifted_month < 10, 3, -9)
    return year_of_era + era * 400 + (month <= 2), month, day


def parse(values: pa.Array, zone: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local (days since 1970-01-01, second of the day) of timestamps given as strings, and which
    of them parsed; missing and empty values are not parsed (their categories are "")."""
    text = pc.fill_null(values.cast(pa.string()), "")
    epoch = pc.match_substring_regex(text, EPOCH_PATTERN).to_numpy(zero_copy_only=False)
    fields = pc.extract_regex(text, ISO_PATTERN)   # null where the text is not ISO-8601
    iso = fields.is_valid().to_numpy(zero_copy_only=False)

    def field(name: str) -> np.ndarray:
        column = pc.fill_null(fields.field(name), "")
        return pc.cast(pc.if_else(pc.equal(column, ""), "0", column), pa.int64()).to_numpy(zero_copy_only=False)
    zone_text = pc.fill_null(fields.field("zone"), "").to_numpy(zero_copy_only=False).astype(str)
    seconds = (field("hour") * 3600 + field("minute") * 60 + field("second"))
    days = days_from_civil(field("year"), field("month"), field("day"))
    offset = np.array([_offset_seconds(z) for z in zone_text], np.int64)
    zoned = iso & (zone_text != "")
    instant = np.where(epoch, np.floor(pc.cast(pc.if_else(epoch, text, "0"), pa.float64())
                                       .to_numpy(zero_copy_only=False)).astype(np.int64),
                       days * _DAY + seconds - offset)
    changes, offsets = zone_table(zone)
    local = instant + offsets[np.searchsorted(changes, instant, side="right")]
    is_instant = epoch | zoned
    local_days = np.where(is_instant, np.floor_divide(local, _DAY), days)
    local_seconds = np.where(is_instant, local - np.floor_divide(local, _DAY) * _DAY, seconds)
    return local_days, local_seconds, epoch | iso


def _offset_seconds(zone_text: str) -> int:
    if zone_text in ("", "Z"):
        return 0
    digits = zone_text[1:].replace(":", "")
    sign = -1 if zone_text[0] == "-" else 1
    return sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)


def part_values(values: pa.Array, part: str, zone: str) -> tuple[pa.Array, np.ndarray]:
    """A date part of each timestamp as a string array ("" where it did not parse), and the parsed mask."""
    days, seconds, parsed = parse(values, zone)
    if part == "hour":
        texts = np.char.zfill((seconds // 3600).astype(str), 2)
    elif part == "day_of_week":
        texts = np.array(WEEKDAYS)[(days + 3) % 7]   # 1970-01-01 was a Thursday
    else:
        year, month, _ = civil_from_days(days)
        if part == "month":
            texts = np.char.zfill(month.astype(str), 2)
        else:
            texts = np.char.zfill((days - days_from_civil(year, np.ones_like(year), np.ones_like(year)) + 1)
                                  .astype(str), 3)
    return pa.array(np.where(parsed, texts, ""), pa.string()), parsed


_EPOCH = re.compile(EPOCH_PATTERN)
_ISO = re.compile(ISO_PATTERN)
_LIMITS = {"month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59), "second": (0, 60)}


def is_timestamp(value: str) -> bool:
    """Whether one text value is a timestamp: epoch seconds, or an ISO-8601 date whose fields are in
    range (the per-row check of preprocess typing; `valid` is the same over an array)."""
    if _EPOCH.match(value):
        return True
    match = _ISO.match(value)
    return bool(match) and all(low <= int(match.group(name) or low) <= high for name, (low, high) in _LIMITS.items())


def valid(values: pa.Array) -> np.ndarray:
    """True where a value is missing, empty or a timestamp (as `is_timestamp`), per value."""
    text = pc.fill_null(values.cast(pa.string()), "")
    fields = pc.extract_regex(text, ISO_PATTERN)
    in_range = np.ones(len(text), bool)
    for name, (low, high) in _LIMITS.items():
        column = pc.fill_null(fields.field(name), str(low)) if fields.null_count < len(fields) else None
        if column is not None:
            numbers = pc.cast(pc.if_else(pc.equal(column, ""), str(low), column), pa.int64()).to_numpy(
                zero_copy_only=False)
            in_range &= (numbers >= low) & (numbers <= high)
    iso = fields.is_valid().to_numpy(zero_copy_only=False) & in_range
    epoch = pc.match_substring_regex(text, EPOCH_PATTERN).to_numpy(zero_copy_only=False)
    return epoch | iso | pc.equal(text, "").to_numpy(zero_copy_only=False)
