"""Date parts of timestamps: the Arrow and the TensorFlow implementations agree value for value, on
hand-checked dates, daylight-saving changes and three notations, and a run computes them from raw rows."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import tensorflow as tf

from pipelines.core import dates
from tests.conftest import TAXI_SAMPLE, run_cli, write_config
from transforms.dates import date_part

# (value, zone) -> (hour, day_of_week, month, day_of_year), checked against a calendar
CASES = [
    (("1400269500", "UTC"), ("19", "Fri", "05", "136")),                 # 2014-05-16 19:45Z
    (("2014-05-16T19:45:00Z", "UTC"), ("19", "Fri", "05", "136")),
    (("2014-05-16T14:45:00-05:00", "UTC"), ("19", "Fri", "05", "136")),
    (("2014-05-16 14:45", "America/Chicago"), ("14", "Fri", "05", "136")),  # no zone: local as written
    (("1400269500", "America/Chicago"), ("14", "Fri", "05", "136")),      # CDT, UTC-5
    (("2014-01-16T19:45:00Z", "America/Chicago"), ("13", "Thu", "01", "016")),   # CST, UTC-6
    (("2014-03-09T07:59:00Z", "America/Chicago"), ("01", "Sun", "03", "068")),   # just before the change
    (("2014-03-09T08:00:00Z", "America/Chicago"), ("03", "Sun", "03", "068")),   # 2:00 CST -> 3:00 CDT
    (("2016-12-31", "UTC"), ("00", "Sat", "12", "366")),                 # a leap year's last day
    (("1969-12-31T23:30:00Z", "UTC"), ("23", "Wed", "12", "365")),       # before the epoch
    (("2014-05-16T19:45:00+05:30", "Asia/Kolkata"), ("19", "Fri", "05", "136")),
    (("not a date", "UTC"), ("", "", "", "")),
    (("", "UTC"), ("", "", "", "")),
]


@pytest.mark.parametrize("case, expected", CASES)
def test_parts_in_arrow_and_in_the_graph(case, expected):
    value, zone = case
    for part, want in zip(dates.PARTS, expected):
        arrow = dates.part_values(pa.array([value]), part, zone)[0].to_pylist()[0]
        graph = date_part(tf.constant([value]), part, zone).numpy()[0].decode()
        assert arrow == graph == want, (part, arrow, graph, want)


def test_parts_agree_on_many_instants():
    rng = np.random.default_rng(0)
    seconds = rng.integers(-2_000_000_000, 4_000_000_000, 3000)
    values = [str(s) for s in seconds] + [pd.Timestamp(s, unit="s").isoformat() + "Z" for s in seconds[:500]]
    for zone in ("UTC", "America/Chicago", "Europe/Berlin", "Australia/Lord_Howe"):
        for part in dates.PARTS:
            arrow = dates.part_values(pa.array(values), part, zone)[0].to_pylist()
            graph = [v.decode() for v in date_part(tf.constant(values), part, zone).numpy()]
            assert arrow == graph, (zone, part)
    expected = pd.to_datetime(seconds, unit="s", utc=True).tz_convert("Europe/Berlin")
    hours = dates.part_values(pa.array([str(s) for s in seconds]), "hour", "Europe/Berlin")[0].to_pylist()
    assert hours == [f"{h:02d}" for h in expected.hour]


def test_timestamp_validity():
    assert [dates.is_timestamp(v) for v in ("1400269500", "2014-05-16T19:45Z", "2014-13-01", "2014-05-16 24:00",
                                            "yesterday", "-1.5")] == [True, True, False, False, False, True]
    np.testing.assert_array_equal(dates.valid(pa.array(["1", "2014-05-16", "2014-02-30 25:00", "", None, "x"])),
                                  [True, True, False, True, True, False])


def test_a_run_crosses_parts_of_a_timestamp(tmp_path):
    """The taxi sample's timestamps are local time written as epoch seconds: read in UTC, their parts
    are exactly the sample's own day (1 = Sunday) and hour columns. Rows carry the timestamp in three
    notations; the published keys read as a user writes them and match the SavedModel's vectors."""
    frame = pd.read_csv(TAXI_SAMPLE)
    stamps = pd.to_datetime(frame.trip_start_timestamp, unit="s")
    notation = np.arange(len(frame)) % 3
    frame["when"] = np.where(notation == 0, frame.trip_start_timestamp.astype(str),
                             np.where(notation == 1, stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                      (stamps - pd.Timedelta(hours=5)).dt.strftime("%Y-%m-%dT%H:%M:%S-05:00")))
    frame.to_csv(tmp_path / "trips.csv", index=False)
    config = write_config(tmp_path, "chicago_taxi_fare", input={"path": str(tmp_path / "trips.csv")},
                          features={"day_hour": {"type": "cross", "columns": ["when.day_of_week", "when.hour"],
                                                 "exact": True},
                                    "trip_miles": {"type": "numeric"}},
                          model={"epochs": 2, "embeddings": {"day_hour": 2}},
                          entities=[{"name": "day_hour", "key": "day_hour"}])
    assert run_cli("run", config, "--output", tmp_path / "runs", "--run-id", "r") == 0
    table = pd.read_parquet(tmp_path / "runs" / "r" / "embeddings" / "day_hour").set_index("key")
    names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    expected = {f"{names[d - 1]}|{h:02d}" for d, h in zip(frame.trip_start_day, frame.trip_start_hour)}
    assert set(table.index) == expected
    model = tf.saved_model.load(str(tmp_path / "runs" / "r" / "model" / "export"))
    row = frame.iloc[0]
    key = f"{names[row.trip_start_day - 1]}|{row.trip_start_hour:02d}"
    for value in frame[frame.trip_start_timestamp == row.trip_start_timestamp].when.tolist()[:1] + [
            str(row.trip_start_timestamp), stamps[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
            (stamps[0] - pd.Timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S-05:00")]:
        served = model.signatures["embed_day_hour"](when=tf.constant([value]))["embedding"].numpy()[0]
        np.testing.assert_allclose(table.loc[key].embedding, served, rtol=1e-6)
    counts = json.loads((tmp_path / "runs" / "r" / "manifest.json").read_text())["stages"]["preprocess"]["counts"]
    assert counts["rows_invalid"] == 0


def test_display_order_puts_weekdays_in_week_order_and_numbers_by_value():
    from pipelines.core.dates import display_order
    assert sorted(["Sun", "10", "Mon", "9", "Fri", "b", "a"], key=display_order) == ["Mon", "Fri", "Sun", "9", "a",
                                                                                     "b", "10"]
