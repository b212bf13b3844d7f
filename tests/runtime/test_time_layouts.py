"""The hub reads every time layout the trainer reads (edgecast_runtime.clock and
readings): a byte-order mark, any header case, the training file's own
year/month/day/hour or date and time columns, epoch seconds and milliseconds, the
recorded day-first or strptime format, and zone rules for times without an offset."""

from datetime import datetime, timedelta, timezone

import pytest

from edgecast_runtime.clock import (
    TimeFormat,
    clock_name,
    parse_clock,
    parse_timestamp,
)
from edgecast_runtime.encodings import InputLayout
from edgecast_runtime.errors import EdgecastRuntimeError, InputShapeError, InputValueError, ModelError
from edgecast_runtime.readings import Header, LineParser, reading_from_json
from edgecast_runtime.spec import Spec

FEATURES = ["PM2.5", "TEMP"]
MARCH_FIRST = datetime(2013, 3, 1, tzinfo=timezone.utc).timestamp()
HOUR = 3600.0


def berlin():
    try:
        return parse_clock("Europe/Berlin")
    except EdgecastRuntimeError:
        pytest.skip("this system has no time zone files (Europe/Berlin unknown)")


def test_bom_and_header_case_are_read():
    parser = LineParser(FEATURES)
    header = parser.parse("\ufeffTimestamp,pm2.5,Temp")
    assert isinstance(header, Header) and header.time_columns == ["Timestamp"]
    reading = parser.parse("2013-03-01T05:00,3,-2.3")
    assert reading.timestamp == MARCH_FIRST + 5 * HOUR and reading.values == [3.0, -2.3]


def test_the_stations_own_header_gives_the_time():
    parser = LineParser(FEATURES, clock=parse_clock("+08:00"))
    header = parser.parse('"No","year","month","day","hour","PM2.5","PM10","TEMP","wd","station"'.replace('"', ""))
    assert header.time_columns == ["year", "month", "day", "hour"]
    reading = parser.parse("1,2013,3,1,8,3,6,-2.3,E,Changping")
    assert reading.timestamp == MARCH_FIRST and reading.values == [3.0, -2.3]  # 08:00 +08:00 is midnight UTC


def test_date_and_time_columns_read_day_first_as_recorded():
    layout = InputLayout(FEATURES, time_columns=["date", "time"], time_format=TimeFormat(dayfirst=True))
    parser = LineParser(layout)
    assert parser.parse("Date;Time".replace(";", ",") + ",PM2.5,TEMP").time_columns == ["Date", "Time"]
    assert parser.parse("13.03.2013,04:00,3,1").timestamp == MARCH_FIRST + (12 * 24 + 4) * HOUR
    assert parser.parse("01/03/2013,05:00,3,1").timestamp == MARCH_FIRST + 5 * HOUR  # day-first, not 3 January
    month_first = LineParser(InputLayout(FEATURES, time_format=TimeFormat(dayfirst=False)))
    assert month_first.parse("03/13/2013 04:00,3,1").timestamp == MARCH_FIRST + (12 * 24 + 4) * HOUR


def test_a_recorded_format_is_used():
    layout = InputLayout(FEATURES, time_format=TimeFormat(format="%d.%m.%Y %H:%M"))
    assert LineParser(layout).parse("01.03.2013 05:00,3,1").timestamp == MARCH_FIRST + 5 * HOUR
    with pytest.raises(InputValueError, match="does not match the model's time format '%d.%m.%Y %H:%M'"):
        LineParser(layout).parse("2013/03/01 05h,3,1")


def test_numeric_dates_need_the_models_word():
    """Without a recorded order, 01/03/2013 could be either: refused, not guessed."""
    with pytest.raises(InputValueError, match="neither seconds since the epoch nor ISO 8601"):
        LineParser(FEATURES).parse("01/03/2013 05:00,3,1")


def test_epoch_seconds_and_milliseconds():
    assert parse_timestamp(MARCH_FIRST) == MARCH_FIRST
    assert parse_timestamp(MARCH_FIRST * 1000) == MARCH_FIRST  # by magnitude
    assert parse_timestamp(str(int(MARCH_FIRST * 1000))) == MARCH_FIRST
    assert parse_timestamp(1_000_000.0, time_format=TimeFormat(unit="ms")) == 1000.0
    assert LineParser(FEATURES).parse(f"{int(MARCH_FIRST * 1000)},3,1").timestamp == MARCH_FIRST


def test_json_keys_any_case_and_time_parts():
    layout = InputLayout(FEATURES)
    reading = reading_from_json({"Timestamp": "2013-03-01T05:00Z", "pm2.5": 3, "temp": 1}, layout)
    assert reading.timestamp == MARCH_FIRST + 5 * HOUR and reading.values == [3.0, 1.0]
    reading = reading_from_json({"year": 2013, "month": 3, "day": 1, "hour": 5, "PM2.5": 3, "TEMP": 1}, layout)
    assert reading.timestamp == MARCH_FIRST + 5 * HOUR


def test_a_time_column_is_never_ignored_silently():
    with pytest.raises(InputShapeError, match=r"time column\(s\) \['hour'\] cannot be read as a timestamp"):
        LineParser(FEATURES).parse("hour,PM2.5,TEMP")
    header = LineParser(FEATURES).parse("ts,year,month,day,hour,PM2.5,TEMP")
    assert header.time_columns == ["ts"] and header.ignored_time_columns == ["year", "month", "day", "hour"]
    with pytest.raises(InputValueError, match=r"'2013/3/1/25' in year/month/day/hour is not a valid time"):
        reading_from_json({"year": 2013, "month": 3, "day": 1, "hour": 25, "PM2.5": 3, "TEMP": 1}, FEATURES)


def test_zone_rules_for_times_without_an_offset():
    zone = berlin()
    repeated = parse_timestamp("2013-10-27 02:30", zone)  # the first 02:30, still summer time
    assert repeated == datetime(2013, 10, 27, 0, 30, tzinfo=timezone.utc).timestamp()
    skipped = parse_timestamp("2014-03-30 02:30", zone)  # does not exist: the offset before the change (+01:00)
    assert skipped == datetime(2014, 3, 30, 1, 30, tzinfo=timezone.utc).timestamp()
    assert parse_timestamp("2014-03-30T03:30+02:00", zone) == skipped


def test_clock_names_and_the_recorded_time_format():
    assert [clock_name(parse_clock(t)) for t in ("utc", "-0530", "UTC+8", "+00:00")] == ["UTC", "-05:30", "+08:00", "UTC"]
    assert clock_name(timezone(timedelta(hours=1))) == "+01:00"
    spec = {"features": FEATURES, "look_back": 4, "horizon": 1, "time_columns": ["ts"]}
    recorded = {"unit": "ms", "format": None, "dayfirst": None}
    assert Spec.from_dict({**spec, "time_format": recorded}, "1").times == TimeFormat("ms")
    assert Spec.from_dict(spec, "1").times == TimeFormat()
    with pytest.raises(ModelError, match=r"'time_format.unit' 'minutes' is not one of \['s', 'ms'\]"):
        Spec.from_dict({**spec, "time_format": {"unit": "minutes"}}, "1")
    read = Spec.from_dict({**spec, "time_format": {"unit": "s"}}, "1")
    layout = read.layout()
    assert layout.time_columns == ["ts"] and layout.time_format == TimeFormat("s")
    assert read.to_dict()["time_format"] == {"unit": "s"}  # written back as it was read
