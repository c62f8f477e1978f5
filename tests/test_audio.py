"""decode_audio / decode_pcm_s16le on files encoded here with PyAV (no fixtures, no network)."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest

from serve_app import errors
from serve_app.audio import (SAMPLE_RATE, AudioLimits, decode_audio, decode_pcm_s16le,
                             duration_s)

TONE_HZ = 440.0
AMPLITUDE = 0.5

# name -> (container format, codec, encoder rate or None for the source rate,
#          codec frame in samples at the encoder rate, or 0 for lossless)
CONTAINERS = {
    "wav": ("wav", "pcm_s16le", None, 0),
    "flac": ("flac", "flac", None, 0),
    "mp3": ("mp3", "libmp3lame", None, 1152),
    "ogg_opus": ("ogg", "libopus", 48000, 960),
    "ogg_vorbis": ("ogg", "vorbis", None, 2048),  # long block
    "m4a": ("ipod", "aac", None, 1024),
    "mp4": ("mp4", "aac", None, 1024),
    "webm": ("webm", "libopus", 48000, 960),
}


def encode(name: str, seconds: float = 2.5, rate: int = 44100, channels: int = 2,
           options: dict | None = None, signal: np.ndarray | None = None) -> bytes:
    """A sine of `seconds` in container `name`."""
    fmt, codec, codec_rate, _ = CONTAINERS[name]
    layout = "stereo" if channels == 2 else "mono"
    if signal is None:
        t = np.arange(int(round(seconds * rate))) / rate
        signal = (AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=options or {}) as out:
        # FFmpeg's own vorbis encoder is "experimental" (and stereo only).
        stream = out.add_stream(codec, rate=codec_rate or rate,
                                options={"strict": "experimental"} if codec == "vorbis" else {})
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.tile(signal, (channels, 1)), format="fltp",
                                           layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):  # PyAV converts to the encoder's rate/format/frame size
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio))


def video_only_mp4() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def damage(data: bytes, at: float, length: int, seed: int = 0) -> bytes:
    """Overwrite `length` bytes at fraction `at` of the file with random bytes."""
    start = int(len(data) * at)
    return data[:start] + np.random.default_rng(seed).bytes(length) + data[start + length:]


# --- every container decodes to the right length, rate, level --------------------------------
SOURCES = [(44100, 2), (8000, 1)]


@pytest.mark.parametrize("rate,channels", SOURCES, ids=["44k1-stereo", "8k-mono"])
@pytest.mark.parametrize("name", list(CONTAINERS))
def test_decode_every_container(name, rate, channels):
    if name == "ogg_vorbis":
        channels = 2  # FFmpeg's vorbis encoder cannot write mono
    audio = decode_audio(encode(name, 2.5, rate, channels))

    assert audio.dtype == np.float32 and audio.ndim == 1
    # Lossy codecs add encoder delay/padding (AAC priming is not trimmed): allow two frames.
    _, _, codec_rate, frame = CONTAINERS[name]
    lossless = frame == 0
    tolerance = 2 * frame / (codec_rate or rate) + 0.002
    assert duration_s(audio) == pytest.approx(2.5, abs=tolerance)
    # Resampled to 16 kHz correctly: the tone stays at 440 Hz.
    assert dominant_hz(audio) == pytest.approx(TONE_HZ, abs=2.0)
    # Stereo is averaged, not summed at 0.707 each (that would give RMS 0.5).
    middle = audio[len(audio) // 4: 3 * len(audio) // 4]
    rms = float(np.sqrt(np.mean(middle ** 2)))
    assert rms == pytest.approx(AMPLITUDE / np.sqrt(2), rel=0.01 if lossless else 0.15)


def test_float_16k_mono_passes_through_unchanged():
    buf = io.BytesIO()
    samples = np.linspace(-0.9, 0.9, SAMPLE_RATE, dtype=np.float32)
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_f32le", rate=SAMPLE_RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            out.mux(packet)
    np.testing.assert_array_equal(decode_audio(buf.getvalue()), samples)


def test_sample_rate_change_mid_stream():
    # Two raw mp3 streams at different rates, back to back: the decoder switches rate and
    # PyAV's resampler refuses frames unlike its first one unless we start a new one.
    options = {"write_xing": "0", "id3v2_version": "0"}
    first = encode("mp3", 1.0, 16000, 1, options)
    second = encode("mp3", 1.0, 44100, 1, options)
    audio = decode_audio(first + second)
    assert duration_s(audio) == pytest.approx(2.0, abs=0.2)
    assert dominant_hz(audio) == pytest.approx(TONE_HZ, abs=2.0)


# --- raw PCM (whisper-asr-webservice encode=false) -------------------------------------------
def test_pcm_round_trip():
    ints = np.array([0, 1, -1, 16384, -16384, 32767, -32768], dtype="<i2")
    audio = decode_pcm_s16le(ints.tobytes())
    assert audio.dtype == np.float32
    np.testing.assert_array_equal(audio, ints.astype(np.float32) / 32768.0)
    assert audio.min() == -1.0 and audio.max() < 1.0


def test_pcm_errors():
    with pytest.raises(errors.EmptyAudioError) as e:
        decode_pcm_s16le(b"")
    assert e.value.param == "audio_file"
    with pytest.raises(errors.CorruptAudioError, match="odd number of bytes"):
        decode_pcm_s16le(b"\x00\x01\x02")
    one_second = bytes(2 * SAMPLE_RATE)
    assert len(decode_pcm_s16le(one_second, AudioLimits(max_duration_s=1.0))) == SAMPLE_RATE
    with pytest.raises(errors.AudioTooLongError):
        decode_pcm_s16le(one_second + b"\x00\x00", AudioLimits(max_duration_s=1.0))
    with pytest.raises(errors.AudioTooLargeError):
        decode_pcm_s16le(one_second, AudioLimits(max_bytes=len(one_second) - 2))


# --- each bad input has its own error --------------------------------------------------------
def test_empty_body():
    with pytest.raises(errors.EmptyAudioError) as e:
        decode_audio(b"", param="upload")
    assert e.value.param == "upload" and e.value.status == 400


@pytest.mark.parametrize("data", [
    b"This is a plain text file, not audio at all.\n" * 20,
    b'{"text": "json"}',
    np.random.default_rng(1).bytes(20_000),
    bytes(4096),
    b"WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n",  # FFmpeg opens this: a subtitle stream
], ids=["text", "json", "random", "zeros", "webvtt"])
def test_not_audio(data):
    with pytest.raises(errors.NotAudioError) as e:
        decode_audio(data)
    assert e.value.status == 415 and e.value.param == "file"


@pytest.mark.parametrize("name,cut", [
    ("wav", 0.5), ("wav", 0.9), ("flac", 0.5), ("mp3", 0.5), ("mp3", 0.9), ("m4a", 0.9),
    ("mp4", 0.5), ("webm", 0.5), ("webm", 0.9), ("ogg_vorbis", 0.5), ("flac", 0.01),
])
def test_truncated(name, cut):
    data = encode(name, 2.5, 44100, 2)
    with pytest.raises(errors.CorruptAudioError):
        decode_audio(data[: int(len(data) * cut)])


@pytest.mark.parametrize("name", ["flac", "mp3", "ogg_opus", "webm", "m4a"])
def test_garbage_in_the_middle(name):
    data = encode(name, 2.5, 44100, 2)
    with pytest.raises(errors.CorruptAudioError):
        decode_audio(damage(data, 0.5, len(data) // 5))


def test_header_only():
    wav = encode("wav", 1.0, 8000, 1)
    with pytest.raises(errors.CorruptAudioError):
        decode_audio(wav[:44])
    # A flac with no samples at all is a well-formed file that decodes to nothing.
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=16000)
        stream.layout = "mono"
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(errors.CorruptAudioError, match="no decodable audio"):
        decode_audio(buf.getvalue())


def test_video_without_audio():
    with pytest.raises(errors.NoAudioStreamError) as e:
        decode_audio(video_only_mp4(), param="file")
    assert e.value.status == 415


def test_random_damage_never_leaks_av_errors():
    rng = np.random.default_rng(7)
    for name in ("wav", "flac", "mp3", "ogg_opus", "m4a", "webm"):
        data = encode(name, 1.0, 16000, 1)
        for _ in range(15):
            at = int(rng.integers(0, len(data)))
            mutated = data[:at] + rng.bytes(int(rng.integers(1, 64))) + data[at + 64:]
            try:
                audio = decode_audio(mutated)
            except errors.AudioError:
                continue
            assert audio.dtype == np.float32 and len(audio) > 0


# --- limits ----------------------------------------------------------------------------------
def test_too_large_is_checked_before_decoding():
    junk = np.random.default_rng(2).bytes(2000)  # would be NotAudioError if it were opened
    with pytest.raises(errors.AudioTooLargeError) as e:
        decode_audio(junk, AudioLimits(max_bytes=1999))
    assert e.value.status == 413
    with pytest.raises(errors.NotAudioError):
        decode_audio(junk, AudioLimits(max_bytes=2000))


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_too_long(name):
    data = encode(name, 2.5, 16000, 2)
    with pytest.raises(errors.AudioTooLongError) as e:
        decode_audio(data, AudioLimits(max_duration_s=1.5))
    assert e.value.status == 413 and "1.5 s" in e.value.message
    assert duration_s(decode_audio(data, AudioLimits(max_duration_s=3.0))) > 2.4
    assert duration_s(decode_audio(data, AudioLimits(max_bytes=None, max_duration_s=None))) > 2.4


def test_duration_limit_stops_decoding_early():
    # No length in the header (no Xing frame), so the limit can only bite while decoding. The
    # file is damaged after ~1.5 s: stopping at the 0.5 s limit never reaches the damage.
    data = encode("mp3", 3.0, 16000, 1, {"write_xing": "0"})
    broken = damage(data, 0.5, 600)
    with pytest.raises(errors.CorruptAudioError):
        decode_audio(broken)
    with pytest.raises(errors.AudioTooLongError, match="decoding stopped"):
        decode_audio(broken, AudioLimits(max_duration_s=0.5))


def test_duration_limit_from_exact_header_before_decoding():
    # flac states its length: a file cut at 30% is refused for length, not for damage.
    data = encode("flac", 3.0, 16000, 1)
    cut = data[: int(len(data) * 0.3)]
    with pytest.raises(errors.CorruptAudioError):
        decode_audio(cut)
    with pytest.raises(errors.AudioTooLongError, match="header says 3.0 s"):
        decode_audio(cut, AudioLimits(max_duration_s=1.0))


def test_limits_validation():
    with pytest.raises(ValueError):
        AudioLimits(max_bytes=0)
    with pytest.raises(ValueError):
        AudioLimits(max_duration_s=-1)
    assert AudioLimits(None, None).max_bytes is None
