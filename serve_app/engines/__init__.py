"""Engines by name; imported lazily so the ingress never imports torch, whisper or funasr."""
from __future__ import annotations

from .base import Engine, TranscribeOptions

ENGINES = {
    "whisper": ("serve_app.engines.whisper", "WhisperEngine"),
    "sensevoice": ("serve_app.engines.sensevoice", "SenseVoiceEngine"),
}


def make_engine(engine: str, model: str, device: str = "auto", **options) -> Engine:
    import importlib

    module, cls = ENGINES[engine]
    return getattr(importlib.import_module(module), cls)(model, device, **options)


__all__ = ["ENGINES", "Engine", "TranscribeOptions", "make_engine"]
