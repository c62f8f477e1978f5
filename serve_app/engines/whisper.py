"""OpenAI Whisper with real cross-request batching.

Every request is cut into fixed 30 s windows; the windows of *all* requests in a batch go
through the encoder as one stacked mel batch, and then through one `DecodingTask` per group of
options that cannot share a decode (prompt, temperature, beam size). Language and task differ
per row inside one decode: we write each row's language and task tokens ourselves, so a batch
mixing English transcription, French translation and auto-detection is still one forward pass
per step. Windows are decoded independently (no conditioning on the previous window's text),
which is what makes them batchable; the result of a request does not depend on what else was
in its batch.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import whisper  # at import, so a replica's memory before its first load includes the library

from ..errors import BadRequestError, ModelLoadError
from ..transcript import Segment, Transcript, Word
from .base import SAMPLE_RATE, Engine, TranscribeOptions, check_local_path

log = logging.getLogger(__name__)

WINDOW_SAMPLES = 30 * SAMPLE_RATE
TIME_PRECISION = 0.02  # seconds per timestamp token


@dataclass
class _Window:
    request: int  # index of the request in the batch
    index: int  # index of the window within its request
    samples: int  # real (unpadded) audio samples in the window
    mel: torch.Tensor  # (n_mels, 3000)

    @property
    def offset(self) -> float:
        return self.index * 30.0


def _row_task_class():
    """A DecodingTask whose language and task tokens are chosen per row.

    Stock whisper takes one language and one task per `decode` call (or detects languages but
    cannot mix a given language with detection). Overriding `_detect_language`, the one step
    that writes the language token, lets each row carry its own.
    """
    from whisper.decoding import DecodingTask

    class RowDecodingTask(DecodingTask):
        def __init__(self, model, options, languages: list[str], tasks: list[str]):
            super().__init__(model, options)
            self.row_languages = languages
            self.row_tasks = tasks

        def _detect_language(self, audio_features, tokens):
            tok = self.tokenizer
            if self.model.is_multilingual:
                lang_ids = [tok.to_language_token(lang) for lang in self.row_languages]
                task_ids = [tok.transcribe if t == "transcribe" else tok.translate
                            for t in self.row_tasks]
                tokens[:, self.sot_index + 1] = torch.tensor(lang_ids)
                tokens[:, self.sot_index + 2] = torch.tensor(task_ids)
            return list(self.row_languages), None

    return RowDecodingTask


class WhisperEngine(Engine):
    engine_name = "whisper"

    def __init__(self, model: str, device: str = "auto", *, sample_len: int | None = None,
                 fp16: bool | None = None, download_root: str | None = None,
                 no_speech_threshold: float | None = 0.6, logprob_threshold: float | None = -1.0,
                 suppress_eot: bool = False, encoder_batch_size: int | None = None,
                 temperature_fallback: tuple[float, ...] | None = (0.2, 0.4, 0.6, 0.8, 1.0),
                 compression_ratio_threshold: float | None = 2.4, **options):
        """
        sample_len: most tokens decoded per 30 s window (None: whisper's 224).
        fp16: half precision; None means on CUDA only.
        no_speech_threshold / logprob_threshold: a window whose no-speech probability is above
            the first and average log-probability below the second is silence and gives no
            text (as in whisper's transcribe); None turns the check off.
        temperature_fallback: temperatures tried in turn for windows of a temperature-0
            request whose decode looks failed (compression ratio above
            compression_ratio_threshold, or average log-probability below logprob_threshold,
            unless silence), as whisper's transcribe() does; None turns it off (deterministic
            output, e.g. for random-weight test models, which always look failed).
        suppress_eot: never end early, always decode sample_len tokens (benchmarks only).
        encoder_batch_size: windows per encoder pass; None means all of them on a GPU and one
            at a time on a CPU, where the encoder is compute-bound and a big batch only spills
            the caches (16 windows of tiny dims: 3.4 s one by one, 4.3 s as one batch). The
            decoder always takes every window of a group at once.
        """
        super().__init__(model, device, **options)
        self.sample_len = sample_len
        self.fp16 = (self.device.startswith("cuda")) if fp16 is None else fp16
        self.download_root = download_root
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self.suppress_eot = suppress_eot
        self.temperature_fallback = tuple(temperature_fallback or ())
        self.compression_ratio_threshold = compression_ratio_threshold
        self.encoder_batch_size = encoder_batch_size or (None if self.device.startswith("cuda")
                                                         else 1)
        self._task_class = None

    # -- loading -------------------------------------------------------------------------
    def _load(self):
        import whisper

        path = check_local_path(self.model_id, must_exist=True)
        if path is None and self.model_id not in whisper.available_models():
            raise ModelLoadError(
                f"unknown whisper model {self.model_id!r}: give a checkpoint path or one of "
                f"{', '.join(whisper.available_models())}")
        try:
            model = whisper.load_model(str(path) if path else self.model_id, device=self.device,
                                       download_root=self.download_root)
        except Exception as exc:  # download failure, corrupt file, out of memory
            raise ModelLoadError(
                f"could not load whisper model {self.model_id!r}: {type(exc).__name__}: {exc}"
            ) from exc
        model.eval()
        self._task_class = _row_task_class()
        return model

    def modules(self) -> list:
        return [self.model] if self.model is not None else []

    def unload(self) -> None:
        # whisper caches tokenizers (~20 MB of BPE tables) and mel filters for the process's
        # life; an unloaded model should not keep them.
        from whisper.audio import mel_filters
        from whisper.tokenizer import get_encoding, get_tokenizer

        for cached in (get_tokenizer, get_encoding, mel_filters):
            cached.cache_clear()
        super().unload()

    # -- inference -------------------------------------------------------------------------
    def _tokenizer(self, language: str | None = None, task: str = "transcribe"):
        from whisper.tokenizer import get_tokenizer

        m = self.model
        return get_tokenizer(m.is_multilingual, num_languages=m.num_languages,
                             language=language if m.is_multilingual else None,
                             task=task if m.is_multilingual else None)

    def _windows(self, request: int, audio: np.ndarray) -> list[_Window]:
        """Cut one request into 30 s windows of log-mel frames.

        The mel of the whole clip is computed once, padded with 30 s of silence in the audio
        domain, as whisper's transcribe() does, then sliced into 3000-frame windows.
        """
        import whisper
        from whisper.audio import N_FRAMES, N_SAMPLES

        mel = whisper.log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(audio)),
                                          self.model.dims.n_mels, padding=N_SAMPLES)
        n_windows = max(1, -(-len(audio) // WINDOW_SAMPLES))
        windows = []
        for k in range(n_windows):
            frames = mel[:, k * N_FRAMES:(k + 1) * N_FRAMES]
            samples = min(WINDOW_SAMPLES, len(audio) - k * WINDOW_SAMPLES)
            windows.append(_Window(request, k, samples, whisper.pad_or_trim(frames, N_FRAMES)))
        return windows

    def _validate(self, audio: np.ndarray, opts: TranscribeOptions) -> None:
        from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

        if audio.ndim != 1 or len(audio) == 0:
            raise BadRequestError("audio must be a non-empty mono waveform", param="file")
        if opts.task not in ("transcribe", "translate"):
            raise BadRequestError(f"task must be transcribe or translate, not {opts.task!r}",
                                  param="task")
        if opts.language is not None:
            code = TO_LANGUAGE_CODE.get(opts.language.lower(), opts.language.lower())
            if code not in LANGUAGES:
                raise BadRequestError(f"unsupported language {opts.language!r}", param="language")

    @torch.inference_mode()
    def transcribe_batch(self, audios: list[np.ndarray],
                         options: list[TranscribeOptions]) -> list[Transcript | Exception]:
        from whisper.tokenizer import TO_LANGUAGE_CODE

        results: list[Transcript | Exception | None] = [None] * len(audios)
        windows: list[_Window] = []
        for i, (audio, opts) in enumerate(zip(audios, options)):
            try:
                self._validate(audio, opts)
                windows.extend(self._windows(i, audio))
            except Exception as exc:  # this request alone fails
                results[i] = exc
        if not windows:
            return results

        dtype = torch.float16 if self.fp16 else torch.float32
        mels = torch.stack([w.mel for w in windows]).to(self.model.device, dtype)
        features = self._encode(mels)

        # Language per request: given, or detected from its first window (one batched step).
        languages: dict[int, tuple[str, float | None]] = {}
        for w_i, w in enumerate(windows):
            lang = options[w.request].language
            if w.index == 0 and lang is not None:
                languages[w.request] = (TO_LANGUAGE_CODE.get(lang.lower(), lang.lower()), None)
        to_detect = [w_i for w_i, w in enumerate(windows)
                     if w.index == 0 and w.request not in languages]
        if to_detect:
            if self.model.is_multilingual:
                _, probs = self.model.detect_language(features[to_detect], self._tokenizer())
                for w_i, p in zip(to_detect, probs):
                    code = max(p, key=p.get)
                    languages[windows[w_i].request] = (code, float(p[code]))
            else:
                languages.update({windows[w_i].request: ("en", None) for w_i in to_detect})

        rows = list(range(len(windows)))
        decoded = self._decode_groups(features, windows, options, languages, rows,
                                      lambda o: o.temperature)
        # Temperature fallback, as in whisper's transcribe(): a window decoded at temperature 0
        # that looks like a failure (repetitive, or improbable and not silence) is decoded
        # again at the next temperature, all such windows of the batch together.
        for temperature in self.temperature_fallback or ():
            retry = [r for r in rows if options[windows[r].request].temperature == 0
                     and self._needs_fallback(decoded[r])]
            if not retry:
                break
            decoded.update(self._decode_groups(features, windows, options, languages, retry,
                                               lambda o, t=temperature: t))

        per_request: dict[int, list[Segment]] = defaultdict(list)
        for w_i, w in enumerate(windows):
            per_request[w.request].extend(self._segments(w, decoded[w_i], options[w.request],
                                                         languages[w.request][0]))
        for i, segments in per_request.items():
            for n, seg in enumerate(segments):
                seg.id = n
            opts = options[i]
            results[i] = Transcript(
                text="".join(s.text for s in segments).strip(),
                language=languages[i][0],
                language_probability=languages[i][1],
                duration=len(audios[i]) / SAMPLE_RATE,
                segments=segments, task=opts.task)
        return results

    def _encode(self, mels: torch.Tensor) -> torch.Tensor:
        """Audio features of every window, encoder_batch_size windows per pass."""
        step = self.encoder_batch_size or len(mels)
        return torch.cat([self.model.embed_audio(mels[i:i + step])
                          for i in range(0, len(mels), step)])

    @torch.inference_mode()
    def detect_language(self, audios: list[np.ndarray]) -> list[tuple[str | None, float | None]]:
        """One batched language-detection step over the first window of every clip."""
        if not self.model.is_multilingual:
            return [("en", None)] * len(audios)
        dtype = torch.float16 if self.fp16 else torch.float32
        mels = torch.stack([self._windows(i, a[:WINDOW_SAMPLES])[0].mel
                            for i, a in enumerate(audios)]).to(self.model.device, dtype)
        _, probs = self.model.detect_language(self._encode(mels), self._tokenizer())
        return [(code, float(p[code])) for p in probs for code in [max(p, key=p.get)]]

    def _decode_groups(self, features, windows, options, languages, rows, temperature_of):
        """Decode windows `rows`, one decode per group of options that can share it."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for r in rows:
            o = options[windows[r].request]
            t = temperature_of(o)
            groups[(o.prompt, t, (o.beam_size or 1) if t == 0 else 1)].append(r)
        decoded = {}
        for (prompt, temperature, beam_size), members in groups.items():
            # Batched beam search crashes in whisper 20250625 (audio features are not repeated
            # per beam, upstream PRs 2197 and 2389): such windows are decoded one at a time.
            chunks = [[r] for r in members] if beam_size > 1 else [members]
            for chunk in chunks:
                results = self._decode(features[chunk], [windows[r] for r in chunk], options,
                                       languages, prompt, temperature, beam_size)
                decoded.update(zip(chunk, results))
        return decoded

    def _needs_fallback(self, result) -> bool:
        too_repetitive = (self.compression_ratio_threshold is not None
                          and result.compression_ratio > self.compression_ratio_threshold)
        improbable = (self.logprob_threshold is not None
                      and result.avg_logprob < self.logprob_threshold)
        return (too_repetitive or improbable) and not self._is_silence(result)

    def _decode(self, features, windows, options, languages, prompt, temperature, beam_size):
        from whisper.decoding import DecodingOptions

        suppress = [-1, self._tokenizer().eot] if self.suppress_eot else [-1]
        opts = DecodingOptions(
            task="transcribe", language="en", temperature=temperature, sample_len=self.sample_len,
            beam_size=beam_size if beam_size > 1 else None, prompt=prompt, fp16=self.fp16,
            suppress_tokens=suppress)
        task = self._task_class(self.model, opts,
                                languages=[languages[w.request][0] for w in windows],
                                tasks=[options[w.request].task for w in windows])
        return task.run(features)

    def _is_silence(self, result) -> bool:
        if self.no_speech_threshold is None or not result.no_speech_prob > self.no_speech_threshold:
            return False
        return self.logprob_threshold is None or result.avg_logprob < self.logprob_threshold

    def _segments(self, window: _Window, result, opts: TranscribeOptions,
                  language: str) -> list[Segment]:
        """Split a window's tokens at timestamp tokens into segments with absolute times."""
        if self._is_silence(result):
            return []
        tokenizer = self._tokenizer(language, opts.task)
        ts_begin = tokenizer.timestamp_begin
        window_end = window.samples / SAMPLE_RATE
        pieces: list[tuple[float, float, list[int]]] = []
        start, text = 0.0, []
        for token in result.tokens:
            if token >= ts_begin:
                t = min((token - ts_begin) * TIME_PRECISION, window_end)
                if text:
                    pieces.append((start, max(t, start), text))
                    text = []
                start = t
            elif token < tokenizer.eot:  # special tokens (language, task, ...) are never text
                text.append(token)
        if text:  # text after the last timestamp runs to the end of the window
            pieces.append((start, window_end, text))

        segments = [
            Segment(id=0, start=window.offset + s, end=window.offset + e,
                    text=tokenizer.decode(toks), tokens=toks, temperature=result.temperature,
                    avg_logprob=result.avg_logprob, compression_ratio=result.compression_ratio,
                    no_speech_prob=result.no_speech_prob)
            for s, e, toks in pieces]
        if opts.word_timestamps and segments:
            self._add_words(window, segments, tokenizer)
        return segments

    def _add_words(self, window: _Window, segments: list[Segment], tokenizer) -> None:
        """Word times by cross-attention alignment (whisper.timing), one window at a time."""
        from whisper.audio import N_FRAMES
        from whisper.timing import add_word_timestamps

        dicts = [dict(seek=window.index * N_FRAMES, start=s.start, end=s.end, tokens=s.tokens)
                 for s in segments]
        add_word_timestamps(segments=dicts, model=self.model, tokenizer=tokenizer,
                            mel=window.mel.to(self.model.device),
                            num_frames=window.samples // 160,
                            last_speech_timestamp=window.offset)
        for seg, d in zip(segments, dicts):
            seg.start, seg.end = float(d["start"]), float(d["end"])
            seg.words = [Word(w["word"], float(w["start"]), float(w["end"]),
                              float(w["probability"]))
                         for w in d.get("words", [])]
