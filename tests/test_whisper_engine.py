"""Whisper engine through the real whisper.load_model, with a tiny random-weight checkpoint."""
import time

import pytest

from serve_app.engines.base import TranscribeOptions
from serve_app.engines.whisper import WhisperEngine
from serve_app.errors import BadRequestError, ModelLoadError
from serve_app.tiny_models import RANDOM_WHISPER_OPTIONS

from .clips import make_clip


@pytest.fixture(scope="module")
def engine(tiny_models_dir):
    e = WhisperEngine(str(tiny_models_dir["whisper"]), device="cpu", sample_len=20,
                      **RANDOM_WHISPER_OPTIONS)
    e.load()
    yield e
    e.unload()


def _tokens(t):
    return [(round(s.start, 2), round(s.end, 2), s.tokens) for s in t.segments]


def test_batched_equals_one_by_one(engine):
    lengths = [2.0, 7.5, 31.0, 12.0, 45.0, 4.0, 64.0, 9.0, 20.0]  # some span several windows
    audios = [make_clip(i, s) for i, s in enumerate(lengths)]
    options = [TranscribeOptions(language=None if i % 3 == 0 else "en",
                                 task="translate" if i == 4 else "transcribe",
                                 prompt="Hello there." if i == 5 else None,
                                 word_timestamps=i == 2)
               for i in range(len(audios))]
    batched = engine.transcribe_batch(audios, options)
    alone = [engine.transcribe_batch([a], [o])[0] for a, o in zip(audios, options)]
    for b, a, seconds in zip(batched, alone, lengths):
        assert _tokens(b) == _tokens(a)
        assert (b.text, b.language) == (a.text, a.language)
        assert b.duration == pytest.approx(seconds)
    # the check can fail: the clips decode to different texts
    assert len({t.text for t in batched}) >= len(audios) - 1
    # long clips were decoded window by window, with times offset into their window
    assert max(s.end for s in batched[6].segments) > 60.0
    assert all(0 <= s.start <= s.end <= 64.0 for s in batched[6].segments)
    assert batched[2].words and all(w.start <= w.end for w in batched[2].words)


def test_beam_search_in_a_batch_does_not_crash(engine):
    audios = [make_clip(i, 5.0) for i in range(3)]
    options = [TranscribeOptions(language="en", beam_size=3)] * 2 + [TranscribeOptions(language="en")]
    batched = engine.transcribe_batch(audios, options)
    assert [_tokens(t) for t in batched] == [
        _tokens(engine.transcribe_batch([a], [o])[0]) for a, o in zip(audios, options)]


def test_bad_item_fails_alone(engine):
    import numpy as np

    audios = [make_clip(0, 3.0), np.zeros(0, np.float32), make_clip(1, 3.0)]
    options = [TranscribeOptions(language="en"), TranscribeOptions(),
               TranscribeOptions(language="xx-nonsense")]
    out = engine.transcribe_batch(audios, options)
    assert out[0].text
    assert isinstance(out[1], BadRequestError)
    assert isinstance(out[2], BadRequestError) and out[2].param == "language"


def test_missing_checkpoint_fails_at_once_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "model.pt"
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match=str(missing)):
        WhisperEngine(str(missing), device="cpu").load()
    assert time.monotonic() - start < 2.0


def test_unknown_model_name_is_a_load_error():
    with pytest.raises(ModelLoadError, match="unknown whisper model 'huge-v9'"):
        WhisperEngine("huge-v9", device="cpu").load()


def test_corrupt_checkpoint_is_a_load_error(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="broken.pt"):
        WhisperEngine(str(bad), device="cpu").load()


def test_temperature_fallback_retries_failed_windows_together(tiny_models_dir):
    engine = WhisperEngine(str(tiny_models_dir["whisper"]), device="cpu", sample_len=8,
                           no_speech_threshold=None, logprob_threshold=-1.0,
                           temperature_fallback=(0.5, 1.0))
    engine.load()
    calls, real = [], engine._decode
    engine._decode = lambda *a: calls.append((len(a[1]), a[5])) or real(*a)  # spy, real decode
    audios = [make_clip(i, 4.0) for i in range(3)]
    options = [TranscribeOptions(language="en")] * 2 + [TranscribeOptions(language="en",
                                                                          temperature=0.3)]
    out = engine.transcribe_batch(audios, options)
    # random weights always look failed (avg log-probability far below -1): both
    # temperature-0 windows are retried together at each fallback temperature; the request
    # that asked for 0.3 is sampled once and left alone
    assert calls == [(2, 0.0), (1, 0.3), (2, 0.5), (2, 1.0)]
    assert {s.temperature for t in out[:2] for s in t.segments} == {1.0}
    assert {s.temperature for s in out[2].segments} == {0.3}
