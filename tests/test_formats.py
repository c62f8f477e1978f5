"""Output formats: subtitles parse back to the segment times, JSON shapes match the APIs."""
from __future__ import annotations

import json
import re

import pytest

from serve_app import errors
from serve_app.formats import FORMATS, format_timestamp, milliseconds, render
from serve_app.transcript import Segment, Transcript, Word

# (start, end) in seconds and the whole milliseconds they must print as.
TIMES = [(0.0, 1.005), (1.005, 59.9995), (59.9995, 3599.9999), (3661.5, 3723.25)]
TIMES_MS = [(0, 1005), (1005, 60000), (60000, 3600000), (3661500, 3723250)]


def make_transcript(**extra) -> Transcript:
    texts = [" Hello world.", " An arrow --> here\tand a tab.", " Third one.", " After an hour."]
    segments = [
        Segment(id=i, start=s, end=e, text=text, tokens=[50364 + i, 100 + i], temperature=0.2,
                avg_logprob=-0.25 - i, compression_ratio=1.5, no_speech_prob=0.01 * i,
                words=[Word(word=" w%d" % i, start=s, end=(s + e) / 2, probability=0.9)])
        for i, ((s, e), text) in enumerate(zip(TIMES, texts))
    ]
    fields = dict(text=" " + " ".join(t.strip() for t in texts), language="en",
                  duration=3723.25, segments=segments)
    fields.update(extra)
    return Transcript(**fields)


# --- a tiny subtitle parser, independent of the writer -----------------------------------------
TIME = r"(\d{2,}):(\d{2}):(\d{2})([,.])(\d{3})"
CUE_TIME = re.compile(f"^{TIME} --> {TIME}$")


def parse_subtitles(body: str, numbered: bool) -> tuple[list[tuple[int, int, str]], set[str]]:
    """Cues as (start_ms, end_ms, text) and the decimal markers seen."""
    cues, markers = [], set()
    for block in body.strip("\n").split("\n\n"):
        lines = block.split("\n")
        if numbered:
            assert lines[0] == str(len(cues) + 1)
            lines = lines[1:]
        m = CUE_TIME.match(lines[0])
        assert m, lines[0]
        h1, m1, s1, marker1, ms1, h2, m2, s2, marker2, ms2 = m.groups()
        markers |= {marker1, marker2}
        start = ((int(h1) * 60 + int(m1)) * 60 + int(s1)) * 1000 + int(ms1)
        end = ((int(h2) * 60 + int(m2)) * 60 + int(s2)) * 1000 + int(ms2)
        cues.append((start, end, "\n".join(lines[1:])))
    return cues, markers


@pytest.mark.parametrize("api", ["openai", "asr"])
def test_srt_parses_back(api):
    body, media_type = render(make_transcript(), "srt", api=api)
    assert "subrip" in media_type
    assert body.endswith("\n\n")  # every cue, the last too, ends with a blank line (whisper)
    cues, markers = parse_subtitles(body, numbered=True)
    assert markers == {","}
    assert [(s, e) for s, e, _ in cues] == TIMES_MS
    assert cues[0][2] == "Hello world."  # stripped
    assert cues[1][2] == "An arrow -> here\tand a tab."  # "-->" would break the timing line


@pytest.mark.parametrize("api", ["openai", "asr"])
def test_vtt_parses_back(api):
    body, media_type = render(make_transcript(), "vtt", api=api)
    assert media_type.startswith("text/vtt")
    assert body.startswith("WEBVTT\n\n")
    cues, markers = parse_subtitles(body[len("WEBVTT\n\n"):], numbered=False)
    assert markers == {"."}
    assert [(s, e) for s, e, _ in cues] == TIMES_MS
    assert cues[2][2] == "Third one."


@pytest.mark.parametrize("seconds,srt", [
    (1.005, "00:00:01,005"),  # float modulo would print ,004
    (59.9995, "00:01:00,000"),  # carries into minutes
    (3599.9999, "01:00:00,000"),  # carries into hours
    (0.0005, "00:00:00,000"),  # an exact half rounds to even, as whisper's round() does
    (2.0015, "00:00:02,002"),
    (0.999, "00:00:00,999"),
    (3723.25, "01:02:03,250"),
    (-0.2, "00:00:00,000"),
])
def test_timestamp_rounding(seconds, srt):
    assert format_timestamp(seconds, ",") == srt
    assert format_timestamp(seconds, ".") == srt.replace(",", ".")


def test_milliseconds_are_integers():
    assert milliseconds(1.005) == 1005 and isinstance(milliseconds(1.005), int)


def test_tsv_integer_milliseconds():
    body, media_type = render(make_transcript(), "tsv", api="asr")
    assert "tab-separated" in media_type
    lines = body.split("\n")
    assert lines[0] == "start\tend\ttext" and lines[-1] == ""
    rows = [line.split("\t") for line in lines[1:-1]]
    assert all(len(r) == 3 for r in rows)  # the tab in the text became a space
    assert [(int(s), int(e)) for s, e, _ in rows] == TIMES_MS
    assert rows[1][2] == "An arrow --> here and a tab."


def test_openai_json_and_text():
    t = make_transcript(duration=12.3)
    body, media_type = render(t, "json")
    assert media_type == "application/json"
    assert body == {"text": t.text.strip(), "usage": {"type": "duration", "seconds": 13}}
    text, media_type = render(t, "text")
    assert media_type.startswith("text/plain")
    assert text == t.text.strip() + "\n"


def test_asr_txt_one_line_per_segment():
    body, _ = render(make_transcript(), "txt", api="asr")
    assert body.split("\n") == ["Hello world.", "An arrow --> here\tand a tab.", "Third one.",
                                "After an hour.", ""]


def test_verbose_json():
    t = make_transcript()
    body, media_type = render(t, "verbose_json")
    json.dumps(body)  # serialisable as is
    assert media_type == "application/json"
    assert set(body) == {"task", "language", "duration", "text", "segments"}
    assert body["task"] == "transcribe" and body["language"] == "english"
    assert body["duration"] == 3723.25 and body["text"] == t.text.strip()
    first, second = body["segments"][:2]
    assert set(first) == {"id", "seek", "start", "end", "text", "tokens", "temperature",
                          "avg_logprob", "compression_ratio", "no_speech_prob"}
    # Times rounded to the same milliseconds as the subtitles (round(59.9995, 3) is 59.999).
    assert (second["id"], second["start"], second["end"]) == (1, 1.005, 60.0)
    assert second["tokens"] == [50365, 101] and second["avg_logprob"] == -1.25
    assert second["seek"] == 100  # no seek from the engine: the start in 10 ms mel frames
    assert "emotion" not in body and "events" not in body

    with_words, _ = render(t, "verbose_json", words=True)
    assert [w["word"] for w in with_words["words"]] == [" w0", " w1", " w2", " w3"]
    assert with_words["words"][1] == {"word": " w1", "start": 1.005, "end": 30.502}


def test_sensevoice_fields_and_no_segments():
    t = Transcript(text="今天天气很好", language="zh", duration=2.5, emotion="HAPPY",
                   events=["Speech", "BGM"])
    verbose, _ = render(t, "verbose_json")
    assert verbose["language"] == "chinese"
    assert verbose["emotion"] == "HAPPY" and verbose["events"] == ["Speech", "BGM"]
    assert [(s["start"], s["end"], s["text"]) for s in verbose["segments"]] == [
        (0.0, 2.5, "今天天气很好")]
    full, _ = render(t, "json", api="asr")
    json.dumps(full)
    assert full["emotion"] == "HAPPY" and full["events"] == ["Speech", "BGM"]
    assert full["text"] == "今天天气很好" and full["language"] == "zh"
    # No timestamps from the engine: one cue over the whole audio rather than an empty file.
    cues, _ = parse_subtitles(render(t, "srt")[0], numbered=True)
    assert cues == [(0, 2500, "今天天气很好")]


def test_asr_json_omits_absent_rich_fields():
    full, _ = render(make_transcript(), "json", api="asr")
    assert "emotion" not in full and "events" not in full
    assert [s["start"] for s in full["segments"]] == [s for s, _ in TIMES]
    assert full["segments"][0]["words"][0]["word"] == " w0"


def test_language_names():
    for code, name in [("en", "english"), ("yue", "cantonese"), ("nospeech", "nospeech")]:
        assert render(make_transcript(language=code), "verbose_json")[0]["language"] == name
    assert render(make_transcript(language=None), "verbose_json")[0]["language"] is None


def test_empty_transcript():
    t = Transcript(text="", language="en", duration=1.0)
    assert render(t, "srt")[0] == ""
    assert render(t, "vtt")[0] == "WEBVTT\n\n"
    assert render(t, "tsv", api="asr")[0] == "start\tend\ttext\n"


@pytest.mark.parametrize("api,fmt,param", [
    ("openai", "tsv", "response_format"), ("openai", "xml", "response_format"),
    ("asr", "verbose_json", "output"), ("asr", "text", "output"),
])
def test_unknown_format(api, fmt, param):
    with pytest.raises(errors.BadRequestError) as e:
        render(make_transcript(), fmt, api=api)
    assert e.value.status == 400 and e.value.param == param
    for allowed in FORMATS[api]:
        assert allowed in e.value.message
    with pytest.raises(errors.BadRequestError) as e:
        render(make_transcript(), fmt, api=api, param="output_format")
    assert e.value.param == "output_format"
