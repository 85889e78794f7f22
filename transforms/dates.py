"""Date parts inside the transform graph, so a SavedModel serving raw rows computes them too.

The grammar, the zone table and the part formats are `pipelines.core.dates`'s (see its docstring);
this is the same arithmetic in TensorFlow ops, tested to agree with it value for value.
"""
from __future__ import annotations

import tensorflow as tf

from pipelines.core import dates

_DAY = 86400
# ISO_PATTERN's groups 1-7 (year, month, day, hour, minute, second, zone) rewritten to fixed fields.
_FIELDS = r"\1|\2|\3|\4|\5|\6|\7"


def _floor_divide(a: tf.Tensor, b: int) -> tf.Tensor:
    return tf.math.floordiv(a, tf.constant(b, tf.int64))


def days_from_civil(year: tf.Tensor, month: tf.Tensor, day: tf.Tensor) -> tf.Tensor:
    """Days since 1970-01-01 (int64 [batch]), as `dates.days_from_civil`."""
    year = year - tf.cast(month <= 2, tf.int64)
    era = _floor_divide(year, 400)
    year_of_era = year - era * 400
    day_of_year = _floor_divide(153 * (month + tf.where(month > 2, tf.constant(-3, tf.int64), 9)) + 2, 5) + day - 1
    day_of_era = year_of_era * 365 + _floor_divide(year_of_era, 4) - _floor_divide(year_of_era, 100) + day_of_year
    return era * 146097 + day_of_era - 719468


def civil_from_days(days: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(year, month) of days since 1970-01-01 (int64 [batch]), as `dates.civil_from_days`."""
    days = days + 719468
    era = _floor_divide(days, 146097)
    day_of_era = days - era * 146097
    year_of_era = _floor_divide(day_of_era - _floor_divide(day_of_era, 1460) + _floor_divide(day_of_era, 36524)
                                - _floor_divide(day_of_era, 146096), 365)
    day_of_year = day_of_era - (365 * year_of_era + _floor_divide(year_of_era, 4) - _floor_divide(year_of_era, 100))
    shifted_month = _floor_divide(5 * day_of_year + 2, 153)
    month = shifted_month + tf.where(shifted_month < 10, tf.constant(3, tf.int64), -9)
    return year_of_era + era * 400 + tf.cast(month <= 2, tf.int64), month


def _number(text: tf.Tensor) -> tf.Tensor:
    return tf.strings.to_number(tf.where(tf.strings.length(text) > 0, text, "0"), tf.int64)


def _zone_offset(zone: tf.Tensor) -> tf.Tensor:
    """Seconds east of UTC of "", "Z", "+05:30" or "-0500" [batch]."""
    digits = tf.strings.regex_replace(zone, r"[^0-9]", "")
    named = tf.strings.length(digits) == 4
    digits = digits + "0000"   # substr fails past a string's end
    sign = tf.where(tf.strings.substr(zone, 0, 1) == "-", tf.constant(-1, tf.int64), 1)
    seconds = (_number(tf.strings.substr(digits, 0, 2)) * 3600 + _number(tf.strings.substr(digits, 2, 2)) * 60)
    return tf.where(named, sign * seconds, tf.zeros_like(seconds))


def local_time(text: tf.Tensor, zone: str) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(local days since 1970-01-01, second of the day, parsed) of timestamp strings [batch]."""
    epoch = tf.strings.regex_full_match(text, dates.EPOCH_PATTERN)
    iso = tf.strings.regex_full_match(text, dates.ISO_PATTERN)
    fields = tf.strings.split(tf.strings.regex_replace(tf.where(iso, text, "0000-01-01"), dates.ISO_PATTERN, _FIELDS),
                              "|").to_tensor(default_value="", shape=[None, 7])
    year, month, day, hour, minute, second = (_number(fields[:, i]) for i in range(6))
    zoned = iso & (tf.strings.length(fields[:, 6]) > 0)
    days = days_from_civil(year, month, day)
    seconds = hour * 3600 + minute * 60 + second
    epoch_seconds = tf.cast(tf.math.floor(tf.strings.to_number(tf.where(epoch, text, "0"), tf.float64)), tf.int64)
    instant = tf.where(epoch, epoch_seconds, days * _DAY + seconds - _zone_offset(fields[:, 6]))
    changes, offsets = dates.zone_table(zone)
    local = instant + tf.gather(tf.constant(offsets), tf.searchsorted(tf.constant(changes), instant, side="right"))
    is_instant = epoch | zoned
    local_days = tf.where(is_instant, _floor_divide(local, _DAY), days)
    local_seconds = tf.where(is_instant, local - _floor_divide(local, _DAY) * _DAY, seconds)
    return local_days, local_seconds, epoch | iso


def date_part(text: tf.Tensor, part: str, zone: str) -> tf.Tensor:
    """One part of each timestamp as a string [batch] ("" where it does not parse)."""
    days, seconds, parsed = local_time(text, zone)
    if part == "hour":
        value = tf.strings.as_string(_floor_divide(seconds, 3600), width=2, fill="0")
    elif part == "day_of_week":
        value = tf.gather(tf.constant(dates.WEEKDAYS), tf.math.floormod(days + 3, 7))
    else:
        year, month = civil_from_days(days)
        if part == "month":
            value = tf.strings.as_string(month, width=2, fill="0")
        else:
            first = days_from_civil(year, tf.ones_like(year), tf.ones_like(year))
            value = tf.strings.as_string(days - first + 1, width=3, fill="0")
    return tf.where(parsed, value, "")
