"""What every engine provides: load, transcribe a batch, drop, move between devices.

Engines never see HTTP and never own lifecycle policy: the deployment's model holder decides
when to call load/unload/offload; engines only know how.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..memory import release_memory
from ..transcript import Transcript

from ..audio import SAMPLE_RATE  # noqa: F401  (engines import it from here)


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-request options; engines ignore what they cannot do."""
    task: str = "transcribe"  # "transcribe" | "translate"
    language: str | None = None  # ISO-639-1 code; None = detect
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    beam_size: int | None = None  # None or 1 = greedy
    use_itn: bool = True  # SenseVoice: inverse text normalisation (punctuation, numbers)
    extra: tuple = field(default=())  # reserved for engine-specific (key, value) pairs


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; anything else is taken as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_local_path(model: str, must_exist: bool) -> Path | None:
    """A model given as a path (absolute, ./relative, or existing) must exist: fail at once.

    Without this, funasr takes a missing directory for a hub id and retries for seconds, and
    whisper reports an unknown model name instead of the missing file.
    """
    looks_like_path = model.startswith(("/", "./", "../", "~")) or model.endswith((".pt", ".pth"))
    path = Path(model).expanduser()
    if looks_like_path or path.exists():
        if must_exist and not path.exists():
            raise ModelLoadError(f"model path {str(path)!r} does not exist")
        return path
    return None


class Engine:
    """Base class; subclasses implement `_load`, `transcribe_batch` and `modules`."""

    engine_name = "base"

    def __init__(self, model: str, device: str = "auto", **options):
        self.model_id = model
        self.device = resolve_device(device)
        self.options = options
        self.model = None

    # -- lifecycle primitives ------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        if self.model is None:
            self.model = self._load()

    def unload(self) -> None:
        """Drop every reference to the weights and give the memory back."""
        self.model = None
        release_memory()

    def to_device(self, device: str) -> None:
        """Move the loaded weights (offload to "cpu", restore to self.device)."""
        for module in self.modules():
            module.to(device)
        release_memory()

    def modules(self) -> list:
        """The torch modules that hold the weights (for offload and memory accounting)."""
        raise NotImplementedError

    def _load(self):
        raise NotImplementedError

    def transcribe_batch(self, audios: list[np.ndarray],
                         options: list[TranscribeOptions]) -> list[Transcript | Exception]:
        """One result per input, in order; an Exception in a slot fails only that request."""
        raise NotImplementedError

    def detect_language(self, audios: list[np.ndarray]) -> list[tuple[str | None, float | None]]:
        """(ISO-639-1 code, probability or None) per clip, from its first 30 s.

        Engines that tag the language as they transcribe (SenseVoice) get this for free.
        """
        first = [a[:30 * SAMPLE_RATE] for a in audios]
        results = self.transcribe_batch(first, [TranscribeOptions()] * len(first))
        return [(r.language, r.language_probability) if isinstance(r, Transcript) else r
                for r in results]
