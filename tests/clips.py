"""Deterministic audio for tests."""
import numpy as np


def make_clip(i: int, seconds: float, sr: int = 16000) -> np.ndarray:
    """A distinct, deterministic test clip: a chirp whose pitch and sweep depend on i."""
    t = np.arange(int(sr * seconds)) / sr
    f0, sweep = 150.0 + 90.0 * i, 30.0 * (i % 5 + 1)
    phase = 2 * np.pi * (f0 * t + sweep * t * t / max(seconds, 1.0))
    return (0.3 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)
