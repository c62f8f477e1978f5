"""Uploaded bytes -> float32 mono 16 kHz samples, in memory, with one error type per problem.

Decoding uses PyAV (FFmpeg inside the wheel; there is no ffmpeg binary to shell out to).

What counts as broken (PyAV decodes many damaged files partially and says nothing):

* bytes FFmpeg cannot open: ``CorruptAudioError`` when they start like a media file (a
  truncated mp4 whose index is missing, a header cut short), else ``NotAudioError``;
* any decoder error, even after some audio came out: ``CorruptAudioError``. We answer 400 rather
  than transcribe half a file without telling anyone;
* a file that ends inside a packet (a wav cut mid-sample block): ``CorruptAudioError``;
* decoding ends short of the length the header states (by more than 0.2 s + 1 %), for
  formats whose header length is exact (flac, wav, mp4/m4a, webm/mkv, ogg, mp3 with a
  Xing/Info/VBRI frame count): ``CorruptAudioError``. This catches a flac/mp3/webm cut short,
  or garbage in the middle that the demuxer silently skips to the end;
* zero samples decoded (a header-only file): ``CorruptAudioError``.

Accepted, because FFmpeg gives no sign of them: a file cut exactly at a packet or page
boundary in a format that learns its length from the file itself (wav, ogg, webm written
live); a damaged stretch shorter than that slack which the decoder resyncs over (a flac
frame or two); noise in PCM data.

Over-limit input is refused early: size before opening, length from an exact header before
decoding, else while decoding, as soon as the count passes the limit.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from .errors import (AudioTooLargeError, AudioTooLongError, CorruptAudioError, EmptyAudioError,
                     NoAudioStreamError, NotAudioError)

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AudioLimits:
    """Per-request limits. ``None`` disables a limit; 0 or a negative value is refused.

    max_bytes: size of the uploaded body in bytes (default 100 MiB).
    max_duration_s: length of the audio in seconds (default 3 hours).
    """
    max_bytes: int | None = 100 * 1024 * 1024
    max_duration_s: float | None = 3 * 3600.0

    def __post_init__(self):
        for name in ("max_bytes", "max_duration_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"AudioLimits.{name} must be positive or None (no limit), "
                                 f"got {value!r}")


def duration_s(audio: np.ndarray) -> float:
    """Length in seconds of samples returned by this module."""
    return len(audio) / SAMPLE_RATE


def decode_pcm_s16le(data: bytes, limits: AudioLimits = AudioLimits(),
                     param: str = "audio_file") -> np.ndarray:
    """Raw PCM, signed 16-bit little-endian, 16 kHz, mono, no header (whisper-asr-webservice
    ``encode=false``), scaled to [-1, 1) the way whisper.load_audio scales it."""
    _check_size(data, limits, param)
    if len(data) % 2:
        raise CorruptAudioError(
            f"raw PCM (encode=false) must be 16-bit samples, but the body has an odd number of "
            f"bytes ({len(data)})", param=param)
    seconds = len(data) // 2 / SAMPLE_RATE
    if limits.max_duration_s is not None and seconds > limits.max_duration_s:
        raise _too_long(limits, param, f"{seconds:.1f} s")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def decode_audio(data: bytes, limits: AudioLimits = AudioLimits(),
                 param: str = "file") -> np.ndarray:
    """Decode any container FFmpeg reads (wav, flac, mp3, ogg, m4a/mp4, webm, ...) to float32
    mono at 16 kHz. Raises the matching ``AudioError`` subclass; never a raw av exception."""
    _check_size(data, limits, param)
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.EOFError:
        # The demuxer recognised the format, then ran out of bytes while reading the header.
        raise CorruptAudioError("the file ends before its header does: it looks truncated",
                                param=param) from None
    except (av.FFmpegError, ValueError, OSError) as e:
        if _looks_like_media(data):
            raise CorruptAudioError(f"the file looks like audio/video but cannot be read "
                                    f"(truncated or damaged): {_reason(e)}", param=param) from None
        raise NotAudioError("the file is not in a recognised audio format", param=param) from None
    with container:
        try:
            return _decode_container(container, data, limits, param)
        except (av.FFmpegError, ValueError, OSError, EOFError) as e:
            raise CorruptAudioError(f"the audio is damaged and cannot be decoded: {_reason(e)}",
                                    param=param) from None


def _decode_container(container, data: bytes, limits: AudioLimits, param: str) -> np.ndarray:
    if not container.streams.audio:
        if container.streams.video:
            raise NoAudioStreamError("the file has no audio stream (video only)", param=param)
        # A subtitle or data file (FFmpeg opens .vtt/.srt text, for instance).
        raise NotAudioError(f"the file is not audio (FFmpeg reads it as "
                            f"{container.format.name!r} with no audio stream)", param=param)
    stream = container.streams.best("audio") or container.streams.audio[0]
    max_s = limits.max_duration_s
    declared = _declared_seconds(container, stream, data)
    # An exact header length over the limit: refuse before decoding anything.
    if max_s is not None and declared is not None and declared > max_s + _slack(declared):
        raise _too_long(limits, param, f"the header says {declared:.1f} s")

    chunks: list[np.ndarray] = []
    resampler, key = None, None
    decoded_s = 0.0
    last_packet_corrupt = False
    for packet in container.demux(stream):  # demuxing one stream discards the others
        if packet.size:  # the final empty packet only flushes the decoder
            last_packet_corrupt = packet.is_corrupt
        for frame in packet.decode():
            decoded_s += frame.samples / frame.sample_rate
            # Count while decoding, so a 10 h file stops at the limit, not after 10 h of work.
            if max_s is not None and decoded_s > max_s:
                raise _too_long(limits, param, f"decoding stopped at {decoded_s:.1f} s")
            # PyAV's resampler refuses a frame whose rate/layout/format differs from the first
            # (mp3 and aac streams may switch); start a new one after flushing the old one.
            frame_key = (frame.format.name, frame.layout.name, frame.sample_rate)
            if frame_key != key:
                _drain(resampler, None, chunks)
                resampler, key = _resampler(), frame_key
            _drain(resampler, frame, chunks)
    _drain(resampler, None, chunks)  # the resampler holds back its last few samples

    if last_packet_corrupt:
        raise CorruptAudioError(f"the file is truncated: it ends inside a packet after "
                                f"{decoded_s:.2f} s of audio", param=param)
    if declared is not None and decoded_s < declared - _slack(declared):
        raise CorruptAudioError(f"the file is truncated or damaged: its header says "
                                f"{declared:.2f} s but only {decoded_s:.2f} s could be decoded",
                                param=param)
    if not chunks:
        raise CorruptAudioError("the file contains no decodable audio samples", param=param)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _resampler() -> av.AudioResampler:
    # rematrix_maxval=1 normalises the downmix so the channel weights sum to 1: stereo becomes
    # (L+R)/2, as in whisper.load_audio (ffmpeg to s16). For float output FFmpeg otherwise
    # mixes each channel at 0.707, making mono 3 dB louder and letting peaks exceed 1.0.
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE,
                             options={"rematrix_maxval": "1.0"})


def _drain(resampler, frame, chunks: list) -> None:
    if resampler is None:
        return
    for out in resampler.resample(frame):
        chunks.append(out.to_ndarray().reshape(-1))  # packed mono: shape (1, n)


# Formats whose header length is exact (sample counts, index tables, granule positions,
# durations written when the file was finished) rather than estimated from the bitrate.
_EXACT_LENGTH_FORMATS = {"wav", "flac", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "ogg", "mp3"}


def _declared_seconds(container, stream, data: bytes) -> float | None:
    fmt = container.format.name
    if fmt not in _EXACT_LENGTH_FORMATS or (fmt == "mp3" and not _mp3_has_frame_count(data)):
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    # webm keeps only a file-wide duration; with other streams it may be theirs.
    if container.duration is not None and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _slack(declared_s: float) -> float:
    # Encoder delay, Opus pre-skip and AAC priming move lengths by tens of milliseconds; a
    # damaged stretch the demuxer skipped over is usually longer than this.
    return 0.2 + 0.01 * declared_s


def _mp3_has_frame_count(data: bytes) -> bool:
    """True when the first mp3 frame carries a Xing/Info/VBRI header (LAME, FFmpeg and most
    encoders write one). Without it FFmpeg guesses the length from the first frame's bitrate,
    which for VBR files can be off several times over."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # skip the ID3v2 tag (syncsafe size)
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (
            data[9] & 0x7F)
        start = 10 + size + (10 if data[5] & 0x10 else 0)
    head = data[start:start + 256]
    return any(tag in head for tag in (b"Xing", b"Info", b"VBRI"))


_MAGIC = (b"RIFF", b"RF64", b"FORM", b"fLaC", b"OggS", b"ID3", b"\x1aE\xdf\xa3",  # EBML
          b"caff", b"#!AMR", b"0&\xb2u\x8ef\xcf\x11")  # ASF/WMA


def _looks_like_media(data: bytes) -> bool:
    """A known container signature or an ISO-BMFF 'ftyp' box. (No check for a bare MPEG sync
    word: about one random upload in a few thousand starts with one.)"""
    return data.startswith(_MAGIC) or data[4:8] == b"ftyp"


def _check_size(data: bytes, limits: AudioLimits, param: str) -> None:
    if not data:
        raise EmptyAudioError("the uploaded file is empty (0 bytes)", param=param)
    if limits.max_bytes is not None and len(data) > limits.max_bytes:
        raise AudioTooLargeError(f"the uploaded file is {len(data)} bytes; the limit is "
                                 f"{limits.max_bytes} bytes", param=param)


def _too_long(limits: AudioLimits, param: str, detail: str) -> AudioTooLongError:
    return AudioTooLongError(f"the audio is longer than the limit of {limits.max_duration_s:g} s "
                             f"({detail})", param=param)


def _reason(e: Exception) -> str:
    # FFmpegError carries (errno, strerror, filename); strerror alone reads best.
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
