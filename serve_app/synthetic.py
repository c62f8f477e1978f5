"""Synthetic audio for offline tests, demos and benchmarks (no recordings needed)."""
from __future__ import annotations

import io

import av
import numpy as np

from .audio import SAMPLE_RATE


def synthetic_clip(i: int, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A distinct, deterministic clip: a chirp whose pitch and sweep depend on i.

    Random-weight models decode different clips to different tokens, so tests comparing
    per-clip outputs can fail.
    """
    t = np.arange(int(sr * seconds)) / sr
    f0, sweep = 150.0 + 90.0 * i, 30.0 * (i % 5 + 1)
    phase = 2 * np.pi * (f0 * t + sweep * t * t / max(seconds, 1.0))
    return (0.3 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


def wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """float32 mono samples as a 16-bit WAV file, in memory."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None, :],
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def pcm_bytes(audio: np.ndarray) -> bytes:
    """float32 mono samples as raw s16le PCM (whisper-asr-webservice `encode=false`)."""
    return (audio * 32767).astype("<i2").tobytes()
