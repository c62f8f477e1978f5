"""The one result type every engine returns and every output format reads."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float | None = None


@dataclass
class Segment:
    id: int
    start: float  # seconds from the start of the audio
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    words: list[Word] | None = None


@dataclass
class Transcript:
    text: str
    language: str | None  # ISO-639-1 code ("en"), None when unknown
    duration: float  # seconds of audio
    segments: list[Segment] = field(default_factory=list)
    task: str = "transcribe"
    # SenseVoice's rich tags, kept as data rather than emoji.
    emotion: str | None = None
    events: list[str] = field(default_factory=list)
    language_probability: float | None = None

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or [])]

    def to_dict(self) -> dict:
        return asdict(self)
