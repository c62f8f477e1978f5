"""The service end to end: a real local Ray Serve over HTTP, real clients, tiny models."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from serve_app.tiny_models import RANDOM_WHISPER_OPTIONS

from .clips import make_clip
from .serve_harness import deploy_declaratively, deployed, pcm_bytes, wait_for, wav_bytes

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(ray_serve, tiny_models_dir):
    config = {
        "ingress": {"max_upload_mb": 2, "max_duration_s": 60},
        "models": [
            {"name": "whisper-tiny", "aliases": ["whisper-1"], "engine": "whisper",
             "model": str(tiny_models_dir["whisper"]),
             "engine_options": {"sample_len": 16, **RANDOM_WHISPER_OPTIONS},
             "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.5}},
            {"name": "sensevoice-tiny", "engine": "sensevoice",
             "model": str(tiny_models_dir["sensevoice"]),
             "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2}},
        ],
    }
    with deployed(config):
        wait_for(lambda: httpx.get(ray_serve + "/health").status_code == 200, 60,
                 what="the service to answer /health")
        yield ray_serve


@pytest.fixture(scope="module")
def client(service):
    return openai.OpenAI(base_url=service + "/v1", api_key="unused", max_retries=0, timeout=120)


def parse_subtitles(body: str, marker: str) -> list[tuple[float, float, str]]:
    """Cues of an SRT (marker ",") or VTT (marker ".") body as (start, end, text)."""
    stamp = rf"(\d\d):(\d\d):(\d\d){re.escape(marker)}(\d\d\d)"
    cues = []
    for m in re.finditer(stamp + r" --> " + stamp + r"\n(.*)", body):
        g = [int(x) for x in m.groups()[:8]]
        cues.append((g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000,
                     g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000, m.group(9)))
    return cues


WAV = wav_bytes(make_clip(3, 6.0))


def test_openai_sdk_every_response_format(client):
    plain = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV))
    assert plain.text
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV),
                                              response_format="text")
    assert text.strip() == plain.text
    srt = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV),
                                             response_format="srt")
    cues = parse_subtitles(srt, ",")
    assert cues and all(0 <= s <= e <= 6.0 for s, e, _ in cues)
    vtt = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV),
                                             response_format="vtt")
    assert vtt.startswith("WEBVTT") and parse_subtitles(vtt, ".") == cues
    verbose = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV),
                                                 response_format="verbose_json")
    assert verbose.duration == pytest.approx(6.0) and verbose.text == plain.text
    assert [(round(s.start, 3), round(s.end, 3)) for s in verbose.segments] == [
        c[:2] for c in cues]
    assert not verbose.words  # words only when asked for
    # word timestamps refine segment times by alignment, so compare them with their own segments
    worded = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", WAV), response_format="verbose_json",
        timestamp_granularities=["word", "segment"])
    assert worded.words and worded.text == plain.text
    assert all(0 <= w.start <= w.end <= 6.0 for w in worded.words)


def test_openai_sdk_translation(client):
    out = client.audio.translations.create(model="whisper-tiny", file=("a.wav", WAV),
                                           response_format="verbose_json")
    assert out.task == "translate" and out.segments


def test_bazarr_raw_pcm_srt_and_detect_language(service):
    audio = make_clip(5, 4.0)
    r = httpx.post(service + "/asr", params={"encode": "false", "output": "srt", "task": "transcribe"},
                   files={"audio_file": ("audio.pcm", pcm_bytes(audio))}, timeout=120)
    assert r.status_code == 200, r.text
    cues = parse_subtitles(r.text, ",")
    assert cues and cues[-1][1] <= 4.0
    r = httpx.post(service + "/detect-language", params={"encode": "false"},
                   files={"audio_file": ("audio.pcm", pcm_bytes(audio))}, timeout=120)
    body = r.json()
    assert r.status_code == 200 and body["language_code"] and body["detected_language"]


def test_routing_by_model_name(service, client):
    sv = client.audio.transcriptions.create(model="sensevoice-tiny", file=("a.wav", WAV),
                                            response_format="verbose_json")
    wh = client.audio.transcriptions.create(model="whisper-tiny", file=("a.wav", WAV),
                                            response_format="verbose_json")
    extra = sv.model_extra or {}
    assert "emotion" in extra and "events" in extra  # SenseVoice's rich fields
    assert "emotion" not in (wh.model_extra or {})
    status = httpx.get(service + "/v1/status").json()["models"]
    assert status["sensevoice-tiny"]["batched_requests"] >= 1
    assert status["whisper-tiny"]["engine"] == "whisper"


def test_concurrent_requests_are_batched_and_equal_alone(service):
    clips = [wav_bytes(make_clip(i, 2.0 + i % 5)) for i in range(16)]

    def ask(data: bytes) -> str:
        r = httpx.post(service + "/v1/audio/transcriptions", data={"model": "whisper-tiny",
                       "response_format": "verbose_json", "language": "en"},
                       files={"file": ("a.wav", data)}, timeout=120)
        assert r.status_code == 200, r.text
        return json.dumps([s["tokens"] for s in r.json()["segments"]])

    before = httpx.get(service + "/v1/status").json()["models"]["whisper-tiny"]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, clips))
    after = httpx.get(service + "/v1/status").json()["models"]["whisper-tiny"]
    n_batches = after["batches"] - before["batches"]
    assert after["batched_requests"] - before["batched_requests"] == 16
    assert n_batches < 16 and after["largest_batch"] > 1  # served in batches larger than one
    alone = [ask(c) for c in clips]
    assert together == alone
    assert len(set(alone)) >= 14  # distinct clips give distinct answers: the check can fail


@pytest.mark.parametrize("files, data, status, param", [
    ({"file": ("a.wav", b"")}, {"model": "whisper-1"}, 400, "file"),
    ({"file": ("a.wav", b"just some text, not audio at all")}, {"model": "whisper-1"}, 415, "file"),
    ({"file": ("a.wav", WAV[: len(WAV) // 2])}, {"model": "whisper-1"}, 400, "file"),
    ({"file": ("a.wav", WAV)}, {"model": "nope"}, 404, "model"),
    ({"file": ("a.wav", WAV)}, {}, 400, "model"),
    ({}, {"model": "whisper-1"}, 400, "file"),
    ({"file": ("a.wav", WAV)}, {"model": "whisper-1", "response_format": "docx"}, 400,
     "response_format"),
    ({"file": ("a.wav", WAV)}, {"model": "whisper-1", "temperature": "7"}, 400, "temperature"),
    ({"file": ("a.wav", WAV)}, {"model": "whisper-1", "language": "klingon"}, 400, "language"),
    ({"file": ("a.wav", b"\0" * (3 * 2**20))}, {"model": "whisper-1"}, 413, None),
    ({"file": ("a.wav", wav_bytes(make_clip(1, 61.0)))}, {"model": "whisper-1"}, 413, "file"),
])
def test_bad_input_gets_status_and_envelope(service, files, data, status, param):
    r = httpx.post(service + "/v1/audio/transcriptions", files=files or None, data=data,
                   timeout=120)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"] and error["param"] == param
    # and the service keeps serving
    ok = httpx.post(service + "/v1/audio/transcriptions", files={"file": ("a.wav", WAV)},
                    data={"model": "whisper-1"}, timeout=120)
    assert ok.status_code == 200


def test_sdk_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError, match="available: whisper-tiny"):
        client.audio.transcriptions.create(model="nope", file=("a.wav", WAV))
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV), temperature=5)
    with pytest.raises(openai.APIStatusError, match="not in a recognised audio format") as info:
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"garbage bytes"))
    assert info.value.status_code == 415


def test_models_and_unknown_route(service):
    ids = {m["id"] for m in httpx.get(service + "/v1/models").json()["data"]}
    assert ids == {"whisper-tiny", "whisper-1", "sensevoice-tiny"}
    r = httpx.get(service + "/v2/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_stream_sends_deltas_then_done(service):
    with httpx.stream("POST", service + "/v1/audio/transcriptions",
                      data={"model": "whisper-tiny", "stream": "true"},
                      files={"file": ("a.wav", WAV)}, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "transcript.text.done"
    assert "".join(e["delta"] for e in events[:-1]).strip() == events[-1]["text"]


def test_overload_503_and_live_batching_reconfigure(ray_serve, tiny_models_dir):
    """A second application, deployed as `serve deploy` does, under its own route prefix:
    a tiny queue answers 503 when full; then new batching reconfigures the same replica."""
    from ray import serve

    model = {"name": "small-queue", "engine": "whisper", "model": str(tiny_models_dir["whisper"]),
             "engine_options": {"sample_len": 8, **RANDOM_WHISPER_OPTIONS},
             "batching": {"max_batch_size": 1, "batch_wait_timeout_s": 0},
             "deployment": {"max_ongoing_requests": 4, "max_queued_requests": 1,
                            "ray_actor_options": {"num_cpus": 0.1}}}
    app = {"name": "overload", "route_prefix": "/overload",
           "import_path": "serve_app.app:build_app", "args": {"models": [model]}}
    url = ray_serve + "/overload"
    deploy_declaratively(app)
    try:
        def ask(_):
            return httpx.post(url + "/v1/audio/transcriptions", data={"model": "small-queue"},
                              files={"file": ("a.wav", WAV)}, timeout=120)

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(ask, range(16)))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) == {200, 503}, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] and busy.json()["error"]["code"] == "overloaded"

        before = httpx.get(url + "/v1/status").json()["models"]["small-queue"]
        # `args` are part of Ray's code version (a change restarts replicas); a deployment's
        # user_config is not: the documented way to change batching live
        app["deployments"] = [{"name": "model-small-queue",
                               "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.2}}]
        deploy_declaratively(app)
        after = wait_for(lambda: (lambda s: s if s.get("batching", {}).get("max_batch_size") == 4
                                  else None)(httpx.get(url + "/v1/status").json()["models"]
                                             ["small-queue"]), 60, what="new batching")
        assert after["replica"] == before["replica"]  # reconfigured in place, not restarted
        assert after["batching"] == {"max_batch_size": 4, "batch_wait_timeout_s": 0.2}
    finally:
        serve.delete("overload")


def test_metrics_reach_the_prometheus_endpoint(service):
    """Ray exports our metrics (ray_ prefix) on the node's metrics port, scraped as Prometheus."""
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    assert transcribe_ok(service)

    wanted = ['ray_asr_batch_size_count{', 'ray_asr_model_requests_total{',
              'ray_asr_http_responses_total{', 'ray_asr_model_loaded{']
    seen = {}

    def scraped():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        lines = [line for line in text.splitlines() if 'model="whisper-tiny"' in line
                 or "ray_asr_http_responses_total{" in line]
        seen["asr"] = sorted({line.split("{")[0] for line in text.splitlines()
                              if line.startswith("ray_asr")})
        return lines if all(any(line.startswith(w) for line in lines) for w in wanted) else None

    try:
        lines = wait_for(scraped, 60, interval_s=1, what="asr metrics on the metrics port")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; asr metrics seen: {seen.get('asr')}") from None
    count = next(line for line in lines if line.startswith("ray_asr_batch_size_count{"))
    assert float(count.rsplit(" ", 1)[1]) >= 1


def transcribe_ok(url: str) -> bool:
    r = httpx.post(url + "/v1/audio/transcriptions", data={"model": "whisper-tiny"},
                   files={"file": ("a.wav", WAV)}, timeout=120)
    return r.status_code == 200
