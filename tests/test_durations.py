from tagger_app.durations import format_duration


def test_durations_read_as_seconds_minutes_or_hours():
    assert [format_duration(s) for s in (0, 44.6, 65, 3599, 3725, -3)] == [
        "0 s", "45 s", "1 min 05 s", "59 min 59 s", "1 h 02 min", "0 s"]
