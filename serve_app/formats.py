"""One Transcript in, the response body out, for every output format both APIs know.

    body, media_type = render(transcript, "srt")             # OpenAI response_format
    body, media_type = render(transcript, "tsv", api="asr")  # whisper-asr-webservice output

`body` is a str for text formats and a dict for JSON ones (the ingress serialises it).
The two APIs share names with different meanings ("json"), hence one table per API.
Like openai-whisper's utils, the writers are a few small classes that differ by attributes.
"""
from __future__ import annotations

import math
from functools import lru_cache

from .errors import BadRequestError
from .transcript import Segment, Transcript

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


# --- timestamps: whole milliseconds first, then integer arithmetic ----------------------------
def milliseconds(seconds: float) -> int:
    """Round to whole milliseconds as openai-whisper does (``round(seconds * 1000.0)``).

    Float modulo on seconds prints 1.005 s as ",004"; 1.005 * 1000.0 is 1004.9999999999999,
    which rounds to 1005. Python rounds exact halves to even (0.0005 s -> 0 ms), as whisper.
    Negative times (never valid) clamp to 0.
    """
    return max(0, int(round(seconds * 1000.0)))


def rounded_seconds(seconds: float) -> float:
    """Seconds for JSON, rounded like the subtitles (round(59.9995, 3) would give 59.999)."""
    return milliseconds(seconds) / 1000


def format_timestamp(seconds: float, decimal_marker: str = ".") -> str:
    """``HH:MM:SS<marker>mmm``; hours grow past 99 rather than wrap."""
    hours, rest = divmod(milliseconds(seconds), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def segment_text(segment: Segment) -> str:
    """A segment's text as shown on its own (whisper keeps the leading space in segments)."""
    return segment.text.strip()


def _segments(t: Transcript) -> list[Segment]:
    """The transcript's segments; one spanning the whole audio when an engine gave none
    (SenseVoice without timestamps), so subtitles still carry the text."""
    if t.segments:
        return t.segments
    if t.text.strip():
        return [Segment(id=0, start=0.0, end=t.duration, text=t.text)]
    return []


@lru_cache(maxsize=None)
def language_name(code: str | None) -> str | None:
    """ISO code -> whisper's English name ("en" -> "english"); unknown codes come back as is.
    Imported lazily: importing whisper imports torch."""
    if code is None:
        return None
    try:
        from whisper.tokenizer import LANGUAGES
    except ImportError:  # pragma: no cover - whisper is a dependency
        return code
    return LANGUAGES.get(code.lower(), code)


def _rich_fields(t: Transcript) -> dict:
    """SenseVoice's emotion and audio events, only when the engine produced them."""
    out = {}
    if t.emotion is not None:
        out["emotion"] = t.emotion
    if t.events:
        out["events"] = list(t.events)
    return out


# --- writers ---------------------------------------------------------------------------------
class Writer:
    media_type = TEXT

    def __call__(self, t: Transcript, words: bool) -> str | dict:
        raise NotImplementedError


class PlainText(Writer):
    """OpenAI ``text``: the whole transcript, one trailing newline."""

    def __call__(self, t, words):
        return t.text.strip() + "\n"


class SegmentLines(Writer):
    """whisper-asr-webservice ``txt`` (openai-whisper's WriteTXT): one segment per line."""

    def __call__(self, t, words):
        return "".join(segment_text(s) + "\n" for s in _segments(t))


class Subtitles(Writer):
    """SRT and VTT differ only in these attributes."""
    header = ""
    decimal_marker = ","
    numbered = True

    def __call__(self, t, words):
        cues = []
        for number, s in enumerate(_segments(t), start=1):
            start = format_timestamp(s.start, self.decimal_marker)
            end = format_timestamp(s.end, self.decimal_marker)
            text = segment_text(s).replace("-->", "->")  # "-->" would end the cue's timing line
            # Every cue ends with a blank line, as openai-whisper writes them.
            number_line = f"{number}\n" if self.numbered else ""
            cues.append(f"{number_line}{start} --> {end}\n{text}\n\n")
        return self.header + "".join(cues)


class SRT(Subtitles):
    media_type = "application/x-subrip; charset=utf-8"


class VTT(Subtitles):
    media_type = "text/vtt; charset=utf-8"
    header = "WEBVTT\n\n"
    decimal_marker = "."
    numbered = False


class TSV(Writer):
    """openai-whisper's WriteTSV: integer milliseconds, tabs in text become spaces."""
    media_type = "text/tab-separated-values; charset=utf-8"

    def __call__(self, t, words):
        rows = ["start\tend\ttext\n"]
        for s in _segments(t):
            text = segment_text(s).replace("\t", " ")
            rows.append(f"{milliseconds(s.start)}\t{milliseconds(s.end)}\t{text}\n")
        return "".join(rows)


class OpenAIJson(Writer):
    """OpenAI ``json``, with vLLM's usage block (billable seconds, rounded up)."""
    media_type = JSON

    def __call__(self, t, words):
        usage = {"type": "duration", "seconds": math.ceil(t.duration)}
        return {"text": t.text.strip(), "usage": usage}


class VerboseJson(Writer):
    """OpenAI ``verbose_json``; ``words`` only when word granularity was asked for."""
    media_type = JSON

    def __call__(self, t, words):
        body = {
            "task": t.task,
            "language": language_name(t.language),
            "duration": rounded_seconds(t.duration),
            "text": t.text.strip(),
            "segments": [self._segment(s) for s in _segments(t)],
        }
        if words:
            body["words"] = [{"word": w.word, "start": rounded_seconds(w.start),
                              "end": rounded_seconds(w.end)} for w in t.words]
        body.update(_rich_fields(t))
        return body

    @staticmethod
    def _segment(s: Segment) -> dict:
        # whisper's seek is the mel frame (10 ms) where the window began; engines that do not
        # track it get the segment's own start frame.
        seek = getattr(s, "seek", None)
        return {
            "id": s.id,
            "seek": int(round(s.start * 100)) if seek is None else seek,
            "start": rounded_seconds(s.start),
            "end": rounded_seconds(s.end),
            "text": s.text,
            "tokens": list(s.tokens),
            "temperature": s.temperature,
            "avg_logprob": s.avg_logprob,
            "compression_ratio": s.compression_ratio,
            "no_speech_prob": s.no_speech_prob,
        }


class FullJson(Writer):
    """whisper-asr-webservice ``json``: the whole transcript as data."""
    media_type = JSON

    def __call__(self, t, words):
        body = t.to_dict()
        del body["emotion"], body["events"]  # put back below only when present
        body.update(_rich_fields(t))
        return body


FORMATS: dict[str, dict[str, Writer]] = {
    # OpenAI /v1/audio/transcriptions response_format
    "openai": {"json": OpenAIJson(), "text": PlainText(), "srt": SRT(),
               "verbose_json": VerboseJson(), "vtt": VTT()},
    # whisper-asr-webservice /asr output
    "asr": {"txt": SegmentLines(), "vtt": VTT(), "srt": SRT(), "tsv": TSV(), "json": FullJson()},
}
DEFAULT_PARAM = {"openai": "response_format", "asr": "output"}


def writer(api: str, fmt: str, param: str | None = None) -> Writer:
    """The writer for format `fmt` of `api` ("openai" or "asr").

    An unknown format raises BadRequestError naming the allowed values; `param` (default
    "response_format" or "output") names the request field in the error.
    """
    writers = FORMATS[api]
    if fmt not in writers:
        raise BadRequestError(f"unsupported {DEFAULT_PARAM[api]} {fmt!r}; expected one of: "
                              f"{', '.join(writers)}", param=param or DEFAULT_PARAM[api])
    return writers[fmt]


def render(transcript: Transcript, fmt: str, *, api: str = "openai", words: bool = False,
           param: str | None = None) -> tuple[str | dict, str]:
    """(body, media type) of `transcript` in format `fmt` of `api` (see `writer`)."""
    w = writer(api, fmt, param)
    return w(transcript, words), w.media_type
