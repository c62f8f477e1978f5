"""SenseVoice engine and the tiny funasr models, offline on the CPU through the real loaders."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from serve_app.engines.base import TranscribeOptions
from serve_app.engines.sensevoice import (SenseVoiceEngine, language_query, parse_rich_text,
                                          split_fixed)
from serve_app.errors import BadRequestError, EmptyAudioError, ModelLoadError
from serve_app.tiny_models import (SENSEVOICE_BPE_NAME, SENSEVOICE_TAG_IDS,
                                   SENSEVOICE_VOCAB_SIZE, build_fsmn_vad, build_sensevoice)

SR = 16000


def chirp(i: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    """A distinct clip per i: a chirp whose pitch and sweep depend on i."""
    t = np.arange(int(SR * seconds)) / SR
    f0, sweep = 150.0 + 90.0 * i, 30.0 * (i % 5 + 1)
    phase = 2 * np.pi * (f0 * t + sweep * t * t / max(seconds, 1.0))
    return (amp * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(SR * seconds), dtype=np.float32)


def summary(t):
    """What must not depend on the batch: text, tags and segments."""
    return (t.text, t.language, t.emotion, t.events, t.duration,
            [(s.id, s.start, s.end, s.text) for s in t.segments])


@pytest.fixture(scope="module")
def dirs(tiny_models_dir):
    return tiny_models_dir


@pytest.fixture(scope="module")
def engine(dirs):
    e = SenseVoiceEngine(str(dirs["sensevoice"]), device="cpu", ncpu=1)
    e.load()
    yield e
    e.unload()


@pytest.fixture(scope="module")
def vad_engine(dirs):
    e = SenseVoiceEngine(str(dirs["sensevoice"]), device="cpu", ncpu=1,
                         vad_model=str(dirs["vad"]))
    e.load()
    yield e
    e.unload()


# -- the engine ---------------------------------------------------------------------------
LENGTHS = [1.5, 4.0, 8.5, 13.0, 20.0, 31.0, 38.5, 47.0]  # the last three exceed 30 s
LANGS = ["en", None, "zh", None, "ko", "en", None, "ja"]


def test_batch_equals_one_by_one(engine):
    clips = [chirp(i, s) for i, s in enumerate(LENGTHS)]
    opts = [TranscribeOptions(language=lang, use_itn=i % 2 == 0) for i, lang in enumerate(LANGS)]
    batched = engine.transcribe_batch(clips, opts)
    alone = [engine.transcribe_batch([c], [o])[0] for c, o in zip(clips, opts)]
    assert all(not isinstance(t, Exception) for t in batched + alone), batched + alone
    for b, a in zip(batched, alone):
        assert summary(b) == summary(a)
    # The check above means something only if the clips decode differently.
    texts = [t.text for t in batched]
    assert all(texts) and len(set(texts)) == len(clips), texts
    for t, seconds, lang in zip(batched, LENGTHS, LANGS):
        assert t.duration == pytest.approx(seconds)
        assert len(t.segments) == -(-seconds // 30)  # long clips are cut, <= 30 s each
        assert t.segments[0].start == 0 and t.segments[-1].end == pytest.approx(seconds)
        for prev, seg in zip(t.segments, t.segments[1:]):
            assert seg.start == prev.end and seg.end - seg.start <= 30.0
        assert t.text == " ".join(s.text for s in t.segments if s.text)
        assert "<|" not in t.text
        if lang is not None:  # the tiny model follows the language query, as SenseVoice does
            assert t.language == lang


def test_one_generate_call_and_forward_pass_per_option_group(engine, monkeypatch):
    calls, passes = [], []
    generate, inference = engine.model.generate, engine.model.model.inference

    def counting_generate(input, **kw):
        calls.append((len(input), kw))
        return generate(input=input, **kw)

    def counting_inference(*a, **kw):
        passes.append(len(kw["data_in"]))
        return inference(*a, **kw)

    monkeypatch.setattr(engine.model, "generate", counting_generate)
    monkeypatch.setattr(engine.model.model, "inference", counting_inference)
    clips = [chirp(i, s) for i, s in enumerate([3.0, 35.0, 5.0, 6.0, 61.0])]
    opts = [TranscribeOptions(language="en"), TranscribeOptions(language="en"),
            TranscribeOptions(), TranscribeOptions(language="en"), TranscribeOptions()]
    out = engine.transcribe_batch(clips, opts)
    assert all(not isinstance(t, Exception) for t in out)
    # Group ("en", itn): 1 + 2 + 1 segments; group ("auto", itn): 1 + 3 segments.
    assert sorted((n, kw["language"], kw["batch_size"]) for n, kw in calls) == [
        (4, "auto", 4), (4, "en", 4)]
    assert sorted(passes) == [4, 4]


def test_requests_fail_alone(engine):
    good = chirp(3, 2.0)
    nan = good.copy()
    nan[5] = np.nan
    out = engine.transcribe_batch(
        [np.zeros(0, np.float32), nan, good, good, good[:100]],
        [TranscribeOptions(), TranscribeOptions(), TranscribeOptions(task="translate"),
         TranscribeOptions(), TranscribeOptions()])
    assert isinstance(out[0], EmptyAudioError)
    assert isinstance(out[1], BadRequestError)
    assert isinstance(out[2], BadRequestError) and out[2].param == "task"
    assert summary(out[3]) == summary(engine.transcribe_batch([good], [TranscribeOptions()])[0])
    assert out[4].duration == pytest.approx(100 / SR)  # shorter than one frame: padded


def test_vad_segments_at_pauses(vad_engine):
    parts = [chirp(1, 3.0), silence(2.0), chirp(2, 4.0), silence(1.5), chirp(4, 35.0)]
    audio = np.concatenate(parts)
    (t,) = vad_engine.transcribe_batch([audio], [TranscribeOptions()])
    assert not isinstance(t, Exception), t
    spans = [(s.start, s.end) for s in t.segments]
    assert len(spans) >= 4, spans  # three stretches of sound, the last one over 30 s
    assert all(0 <= a < b <= t.duration for a, b in spans)
    assert all(b - a <= 30.0 for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    # The pauses are found: no segment crosses the middle of either silence.
    for mid in (4.0, 9.75):
        assert not any(a < mid < b for a, b in spans), spans
    assert spans[0][0] < 0.5 and all(s.text for s in t.segments)

    quiet = vad_engine.transcribe_batch([silence(3.0)], [TranscribeOptions()])[0]
    assert quiet.text == "" and quiet.segments == [] and quiet.language is None


def test_vad_batch_equals_one_by_one(vad_engine):
    clips = [np.concatenate([chirp(i, 2.0 + i), silence(1.2), chirp(i + 3, 3.0)])
             for i in range(3)]
    opts = [TranscribeOptions(language="zh"), TranscribeOptions(), TranscribeOptions()]
    batched = vad_engine.transcribe_batch(clips, opts)
    alone = [vad_engine.transcribe_batch([c], [o])[0] for c, o in zip(clips, opts)]
    assert [summary(t) for t in batched] == [summary(t) for t in alone]
    assert all(len(t.segments) == 2 for t in batched)


def test_detect_language(engine):
    found = engine.detect_language([chirp(0, 2.0), chirp(5, 3.0)])
    assert len(found) == 2
    assert all(code in (None, "zh", "en", "yue", "ja", "ko") and p is None for code, p in found)


def test_missing_local_model_fails_at_once(tmp_path, dirs):
    missing = tmp_path / "no-such-model"
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="no-such-model"):
        SenseVoiceEngine(str(missing), device="cpu").load()
    with pytest.raises(ModelLoadError, match="no-vad"):
        SenseVoiceEngine(str(dirs["sensevoice"]), device="cpu",
                         vad_model=str(tmp_path / "no-vad")).load()
    assert time.monotonic() - start < 2.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.yaml"):
        SenseVoiceEngine(str(tmp_path / "empty"), device="cpu").load()


def test_unload_drops_everything(dirs):
    e = SenseVoiceEngine(str(dirs["sensevoice"]), device="cpu", vad_model=str(dirs["vad"]))
    e.load()
    assert len(e.modules()) == 2
    e.to_device("cpu")
    e.unload()
    assert e.model is None and e.vad is None and e.modules() == []
    e.load()  # loads again after an unload
    assert e.loaded
    e.unload()


# -- parsing ------------------------------------------------------------------------------
def test_parse_rich_text():
    r = parse_rich_text("<|en|><|HAPPY|><|Speech|><|withitn|>Hello,   world.")
    assert (r.text, r.language, r.emotion, r.events, r.itn) == (
        "Hello, world.", "en", "happy", ["Speech"], True)
    r = parse_rich_text("<|nospeech|><|EMO_UNKNOWN|><|Event_UNK|><|woitn|>")
    assert (r.text, r.language, r.emotion, r.events, r.itn) == ("", None, None, ["Event_UNK"],
                                                                False)
    r = parse_rich_text("<|yue|><|SAD|><|BGM|><|Laughter|><|woitn|>你好 <|Cough|>")
    assert (r.text, r.language, r.emotion, r.events) == ("你好", "yue", "sad",
                                                         ["BGM", "Laughter", "Cough"])


def test_language_query_and_windows():
    assert [language_query(x) for x in (None, "", "EN", "zh-CN", "yue", "de")] == [
        "auto", "auto", "en", "zh", "yue", "auto"]
    assert split_fixed(0, 10) == []
    assert split_fixed(25, 10) == [(0, 8), (8, 16), (16, 25)]
    assert split_fixed(10, 10) == [(0, 10)]


# -- the tiny models ----------------------------------------------------------------------
def _load_auto(path: Path, **kw):
    from funasr import AutoModel

    return AutoModel(model=str(path), disable_update=True, device="cpu", ncpu=1,
                     disable_pbar=True, **kw)


@pytest.mark.parametrize("name", ["sensevoice", "vad"])
def test_tiny_dirs_load_with_every_key(dirs, name):
    path = dirs[name]
    meta = json.loads((path / "configuration.json").read_text())["file_path_metas"]
    for rel in [meta["init_param"], meta["config"], meta["frontend_conf"]["cmvn_file"],
                *meta.get("tokenizer_conf", {}).values()]:
        assert (path / rel).is_file(), rel
    saved = torch.load(path / "model.pt", map_location="cpu")
    model = _load_auto(path).model
    live = model.state_dict()
    # funasr only warns about missing or mismatched keys: check them here.
    assert set(saved) == set(live)
    for key, value in saved.items():
        assert value.shape == live[key].shape, key
        assert torch.equal(value, live[key]), key
        assert torch.isfinite(value).all() and value.float().std() > 0, key  # all initialised


def test_sensevoice_vocabulary_matches_funasr(dirs):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(dirs["sensevoice"] / SENSEVOICE_BPE_NAME))
    assert sp.get_piece_size() == SENSEVOICE_VOCAB_SIZE
    for tag, idx in SENSEVOICE_TAG_IDS.items():
        assert sp.piece_to_id(tag) == idx and sp.decode([idx]) == tag
    auto = _load_auto(dirs["sensevoice"])
    model = auto.model
    assert model.ctc.ctc_lo.out_features == SENSEVOICE_VOCAB_SIZE
    # The ids funasr hard-codes (language, emotion and text-norm tags) are our tags.
    hard_coded = {**model.lid_int_dict, **model.textnorm_int_dict,
                  **{v: k for k, v in model.emo_dict.items()}}
    assert set(hard_coded) <= set(SENSEVOICE_TAG_IDS.values())
    # ban_emo_unk indexes id 25009: it runs.
    res = auto.generate(input=[chirp(0, 1.0)], ban_emo_unk=True)
    assert "<|EMO_UNKNOWN|>" not in res[0]["text"]


def test_builds_are_deterministic(tmp_path):
    for build in (lambda d, s: build_sensevoice(d, seed=s), lambda d, s: build_fsmn_vad(d, s)):
        a, b, c = build(tmp_path / "a", 0), build(tmp_path / "b", 0), build(tmp_path / "c", 1)
        for name in [p.name for p in a.iterdir() if p.name != "model.pt"]:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
        sa, sb, sc = (torch.load(d / "model.pt", map_location="cpu") for d in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa)
        for d in (a, b, c):
            for p in d.iterdir():
                p.unlink()
            d.rmdir()
