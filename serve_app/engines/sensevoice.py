"""SenseVoice through funasr: every segment of every request in one batched forward pass.

funasr's `AutoModel.generate(input=[arrays...], batch_size=N)` runs SenseVoiceSmall once over
a padded batch of N clips (features padded, encoder masked, CTC greedy per clip), so batching
is a real single forward pass, and with dither 0 it gives the same text as one clip at a time.
Two generate keyword arguments apply to the whole call (`language`, `use_itn`), so requests
are grouped by them: one generate call per distinct pair, not one per request.

We cut long audio ourselves (fsmn-vad when configured, else equal windows of at most
`max_segment_s`) instead of letting `AutoModel(vad_model=...)` do it: funasr's VAD path runs
one input at a time and batches only within it, so requests could never share a batch.

SenseVoice output starts with tags, e.g. ``<|en|><|NEUTRAL|><|Speech|><|withitn|>Hello.``.
They become data on the Transcript (API.md section 3):
- `language`: the ISO code of the language tag ("zh", "en", "ja", "ko"; Cantonese is "yue",
  the code Whisper also uses); ``<|nospeech|>`` or no tag gives None.
- `emotion`: the emotion tag as a lowercase word ("happy", "sad", "angry", "neutral",
  "fearful", "disgusted", "surprised"); ``<|EMO_UNKNOWN|>`` or no tag gives None.
- `events`: the audio-event tag names as SenseVoice spells them ("Speech", "BGM",
  "Applause", "Laughter", "Cry", "Sneeze", "Breath", "Cough", ...), in order, no repeats.
- `text`: the text with every ``<|...|>`` tag removed and whitespace collapsed.
For several segments, language and emotion are the ones covering the most audio; events are
the union.

Options: `language` ISO-639-1 (zh, en, ja, ko, or yue) forces the language query; anything
else (None, other languages) lets the model detect. `use_itn` selects punctuation and
inverse text normalisation. `task="translate"` fails that request (SenseVoice only
transcribes). prompt, temperature, beam_size and word_timestamps are ignored: SenseVoice is
CTC greedy, and funasr's `output_timestamp` path re-tokenises the text and crashes when the
re-tokenisation differs from the emitted tokens.
"""
from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadRequestError, EmptyAudioError, ModelLoadError
from ..transcript import Segment, Transcript
from .base import SAMPLE_RATE, Engine, TranscribeOptions, check_local_path

SUPPORTED_LANGUAGES = ("zh", "en", "yue", "ja", "ko")  # SenseVoiceSmall's language queries
EMOTIONS = {"HAPPY": "happy", "SAD": "sad", "ANGRY": "angry", "NEUTRAL": "neutral",
            "FEARFUL": "fearful", "DISGUSTED": "disgusted", "SURPRISED": "surprised",
            "EMO_UNKNOWN": None}
EVENTS = ("Speech", "BGM", "Applause", "Laughter", "Cry", "Sneeze", "Breath", "Cough",
          "Sing", "Speech_Noise", "GBG", "Event_UNK")
_TAG = re.compile(r"<\|([^<>|]*)\|>")
# kaldi-native-fbank crashes the process (SIGSEGV) on an empty array and rejects one sample;
# shorter segments are padded with silence to one 25 ms frame.
_MIN_SAMPLES = 400
_MIN_SEGMENT_S = 0.01  # VAD segments shorter than this carry nothing


@dataclass
class RichText:
    """One SenseVoice output split into clean text and its tags."""
    text: str
    language: str | None = None
    emotion: str | None = None
    events: list[str] = field(default_factory=list)
    itn: bool | None = None
    tags: list[str] = field(default_factory=list)  # every tag name, in order


def parse_rich_text(raw: str) -> RichText:
    """Split ``<|en|><|HAPPY|><|Speech|><|withitn|>Hello.`` into text and fields.

    The first language / emotion tag wins; events keep their order; unknown tags are kept in
    `tags` only. Tags are removed from the text wherever they stand.
    """
    out = RichText(text=" ".join(_TAG.sub(" ", raw).split()))
    seen_language = seen_emotion = False
    for name in _TAG.findall(raw):
        out.tags.append(name)
        if name in SUPPORTED_LANGUAGES or name == "nospeech":
            if not seen_language:
                out.language = None if name == "nospeech" else name
                seen_language = True
        elif name in EMOTIONS:
            if not seen_emotion:
                out.emotion = EMOTIONS[name]
                seen_emotion = True
        elif name in EVENTS:
            if name not in out.events:
                out.events.append(name)
        elif name in ("withitn", "woitn"):
            out.itn = name == "withitn"
    return out


def language_query(language: str | None) -> str:
    """TranscribeOptions.language -> SenseVoice's `language` argument ("auto" when unsupported)."""
    if not language:
        return "auto"
    code = language.strip().lower().replace("_", "-").split("-")[0]
    return code if code in SUPPORTED_LANGUAGES else "auto"


def _is_cjk(ch: str) -> bool:
    return ("\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u9fff"
            or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\ufaff")


def join_texts(texts: list[str]) -> str:
    """Join segment texts: no space between two CJK characters, one space otherwise."""
    out = ""
    for t in texts:
        if not t:
            continue
        if out and not (_is_cjk(out[-1]) and _is_cjk(t[0])):
            out += " "
        out += t
    return out


def split_fixed(n_samples: int, max_samples: int) -> list[tuple[int, int]]:
    """Equal windows of at most max_samples covering [0, n): no tiny last window."""
    if n_samples <= 0:
        return []
    count = -(-n_samples // max_samples)
    return [(i * n_samples // count, (i + 1) * n_samples // count) for i in range(count)]


@dataclass
class _Piece:
    request: int
    start: int  # samples
    end: int
    audio: np.ndarray
    text: RichText | None = None


class SenseVoiceEngine(Engine):
    engine_name = "sensevoice"

    def __init__(self, model: str, device: str = "auto", *, vad_model: str | None = None,
                 dither: float = 0.0, ncpu: int = 1, max_segment_s: float = 30.0,
                 hub: str = "ms", vad_max_end_silence_ms: int | None = 800,
                 max_batch_segments: int | None = None, log_level: str = "WARNING",
                 **options):
        """
        model: a local SenseVoiceSmall directory or a hub id ("iic/SenseVoiceSmall").
        vad_model: fsmn-vad directory or hub id; None cuts fixed windows instead.
        dither: funasr's WavFrontend adds this much noise (its default 1.0 makes every call
            differ); 0 keeps results reproducible.
        ncpu: torch threads; funasr sets it for the whole process (its default is 4).
        max_segment_s: longest piece fed to the model, in seconds (VAD segments are split too).
        vad_max_end_silence_ms: silence that ends a VAD segment, as in fsmn-vad's config;
            None keeps funasr's dynamic schedule (up to 2 s early in a segment).
        max_batch_segments: most segments per forward pass; None = all of a group in one.
        hub: where funasr downloads hub ids from ("ms" ModelScope, "hf" Hugging Face).
        log_level: handed to funasr, which calls logging.basicConfig with it (its default
            INFO turns on every library's INFO logs in a process without logging set up).
        """
        super().__init__(model, device, **options)
        if max_segment_s <= 0:
            raise ValueError("max_segment_s must be positive")
        self.vad_model_id = vad_model
        self.dither = float(dither)
        self.ncpu = int(ncpu)
        self.max_segment_s = float(max_segment_s)
        self.hub = hub
        self.vad_max_end_silence_ms = vad_max_end_silence_ms
        self.max_batch_segments = max_batch_segments
        self.log_level = log_level
        self.vad = None

    # -- lifecycle -------------------------------------------------------------------------
    def _resolve(self, model: str) -> str:
        """A local path must exist and hold a funasr model; a hub id goes to funasr as is."""
        path = check_local_path(model, must_exist=True)
        if path is None:
            return model
        if not (path / "config.yaml").exists() and not (path / "configuration.json").exists():
            raise ModelLoadError(f"model path {str(path)!r} holds no config.yaml or "
                                 "configuration.json")
        # Absolute: funasr maps some bare names ("fsmn-vad") to hub ids before looking on disk.
        return str(path.resolve())

    def _auto_model(self, model: str, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()):  # funasr prints an ffmpeg notice
            from funasr import AutoModel
        try:
            return AutoModel(model=model, disable_update=True, device=self.device,
                             ncpu=self.ncpu, hub=self.hub, disable_pbar=True,
                             log_level=self.log_level, **kwargs)
        except Exception as e:  # noqa: BLE001 - any load failure is a ModelLoadError
            raise ModelLoadError(f"could not load {model!r}: {type(e).__name__}: {e}") from e

    def _load(self):
        model = self._resolve(self.model_id)
        vad = self._resolve(self.vad_model_id) if self.vad_model_id else None
        asr = self._auto_model(model, frontend_conf={"dither": self.dither})
        if vad is not None:
            # fsmn-vad overshoots its max_single_segment_time by a frame or two (30 s gives
            # 30.01 s segments, which we would then halve): ask for 100 ms less. A longer
            # segment is still split below.
            max_ms = max(100, int(self.max_segment_s * 1000) - 100)
            self.vad = self._auto_model(vad, max_single_segment_time=max_ms)
        return asr

    def unload(self) -> None:
        self.vad = None
        super().unload()

    def modules(self) -> list:
        mods = [self.model.model] if self.model is not None else []
        if self.vad is not None:
            mods.append(self.vad.model)
        return mods

    def to_device(self, device: str) -> None:
        super().to_device(device)
        # funasr moves inputs to the device it was built with and ignores a device given to
        # generate(); point its settings (and the per-call baseline it restores) at the new one.
        for auto in (self.model, self.vad):
            if auto is None:
                continue
            auto.kwargs["device"] = device
            base = getattr(auto, "_base_kwargs_map", {}).get("kwargs")
            if base is not None:
                base["device"] = device

    # -- inference -------------------------------------------------------------------------
    def _segment(self, audio: np.ndarray) -> list[tuple[int, int]]:
        max_samples = max(1, int(self.max_segment_s * SAMPLE_RATE))
        if self.vad is None:
            return split_fixed(len(audio), max_samples)
        kwargs = {}
        if self.vad_max_end_silence_ms is not None:
            kwargs["max_end_silence_time"] = int(self.vad_max_end_silence_ms)
        found = self.vad.generate(input=audio, **kwargs)[0]["value"]
        spans = []
        for start_ms, end_ms in found:
            start = max(0, int(start_ms * SAMPLE_RATE // 1000))
            end = min(len(audio), int(end_ms * SAMPLE_RATE // 1000))
            if end - start < _MIN_SEGMENT_S * SAMPLE_RATE:
                continue
            spans += [(start + a, start + b) for a, b in split_fixed(end - start, max_samples)]
        return spans

    def _generate(self, pieces: list[_Piece], language: str, use_itn: bool) -> None:
        """One generate call (one forward pass unless max_batch_segments) over the pieces."""
        # Longest first: with max_batch_segments the passes hold similar lengths.
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i].audio))
        inputs = [pieces[i].audio for i in order]
        batch = len(inputs) if not self.max_batch_segments else min(len(inputs),
                                                                  self.max_batch_segments)
        results = self.model.generate(input=inputs, language=language, use_itn=use_itn,
                                      batch_size=batch)
        if len(results) != len(inputs):
            raise RuntimeError(f"funasr returned {len(results)} results for {len(inputs)} inputs")
        for i, result in zip(order, results):
            pieces[i].text = parse_rich_text(result["text"])

    def transcribe_batch(self, audios: list[np.ndarray],
                         options: list[TranscribeOptions]) -> list[Transcript | Exception]:
        import torch

        if len(audios) != len(options):
            raise ValueError("audios and options differ in length")
        self.load()
        results: list[Transcript | Exception | None] = [None] * len(audios)
        pieces: dict[int, list[_Piece]] = {}
        groups: dict[tuple[str, bool], list[int]] = {}
        with torch.inference_mode():
            for r, (audio, opts) in enumerate(zip(audios, options)):
                try:
                    if opts.task != "transcribe":
                        raise BadRequestError(f"SenseVoice cannot {opts.task!r}; it only "
                                              "transcribes", param="task")
                    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
                    if audio.size == 0:
                        raise EmptyAudioError("the audio holds no samples", param="file")
                    if not np.isfinite(audio).all():
                        raise BadRequestError("the audio holds NaN or infinite samples",
                                              param="file")
                    own = []
                    for start, end in self._segment(audio):
                        seg = audio[start:end]
                        if len(seg) < _MIN_SAMPLES:
                            seg = np.pad(seg, (0, _MIN_SAMPLES - len(seg)))
                        own.append(_Piece(r, start, end, seg))
                    pieces[r] = own
                    key = (language_query(opts.language), bool(opts.use_itn))
                    groups.setdefault(key, []).append(r)
                    results[r] = Transcript(text="", language=None,
                                            duration=len(audio) / SAMPLE_RATE)
                except Exception as e:  # noqa: BLE001 - this request fails, not the batch
                    results[r] = e

            for (language, use_itn), requests in groups.items():
                batch = [p for r in requests for p in pieces[r]]
                if not batch:
                    continue
                try:
                    self._generate(batch, language, use_itn)
                except Exception:  # noqa: BLE001 - find the request that broke the batch
                    for r in requests:
                        try:
                            if pieces[r]:
                                self._generate(pieces[r], language, use_itn)
                        except Exception as e:  # noqa: BLE001
                            results[r] = e

        for r, own in pieces.items():
            if isinstance(results[r], Transcript):
                self._stitch(results[r], own)
        return results

    @staticmethod
    def _stitch(transcript: Transcript, own: list[_Piece]) -> None:
        """Fill a request's Transcript from its decoded pieces, in order."""
        languages, emotions = Counter(), Counter()
        for i, piece in enumerate(own):
            rich = piece.text
            seconds = (piece.end - piece.start) / SAMPLE_RATE
            transcript.segments.append(Segment(
                id=i, start=piece.start / SAMPLE_RATE, end=piece.end / SAMPLE_RATE,
                text=rich.text))
            if rich.language:
                languages[rich.language] += seconds
            if rich.emotion:
                emotions[rich.emotion] += seconds
            transcript.events += [e for e in rich.events if e not in transcript.events]
        transcript.text = join_texts([s.text for s in transcript.segments])
        transcript.language = languages.most_common(1)[0][0] if languages else None
        transcript.emotion = emotions.most_common(1)[0][0] if emotions else None

    def detect_language(self, audios: list[np.ndarray]) -> list[tuple[str | None, float | None]]:
        """Language of each clip's first max_segment_s seconds, in one forward pass.

        SenseVoice gives no probability: the second item is always None.
        """
        import torch

        self.load()
        n = int(self.max_segment_s * SAMPLE_RATE)
        clips = []
        for audio in audios:
            clip = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)[:n]
            if clip.size == 0:
                raise EmptyAudioError("the audio holds no samples", param="file")
            clips.append(np.pad(clip, (0, max(0, _MIN_SAMPLES - len(clip)))))
        pieces = [_Piece(i, 0, len(c), c) for i, c in enumerate(clips)]
        with torch.inference_mode():
            self._generate(pieces, "auto", False)
        return [(p.text.language, None) for p in pieces]
