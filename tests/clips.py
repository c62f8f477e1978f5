"""Deterministic audio for tests."""
from serve_app.synthetic import pcm_bytes, synthetic_clip as make_clip, wav_bytes  # noqa: F401
