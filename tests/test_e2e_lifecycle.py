"""Lifecycle modes through a real local Ray Serve, with short timers.

Every wait polls for a state with a bound; "never happens" checks use another model's
transition as the clock instead of a fixed sleep.
"""
from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serve_app.tiny_models import RANDOM_WHISPER_OPTIONS

from .clips import make_clip
from .serve_harness import deployed, wait_for, wav_bytes

pytestmark = pytest.mark.e2e

FAST_AUTOSCALING = {  # test-only intervals (PITFALLS: defaults take ~30 s to scale down)
    "metrics_interval_s": 0.5, "look_back_period_s": 1, "upscale_delay_s": 0,
    "downscale_delay_s": 2, "max_replicas": 1,
}
SMALL = {"ray_actor_options": {"num_cpus": 0.1}}


def whisper(name: str, path: str, **extra) -> dict:
    return {"name": name, "engine": "whisper", "model": path,
            "engine_options": {"sample_len": 8, **RANDOM_WHISPER_OPTIONS},
            "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05},
            "deployment": SMALL, **extra}


@pytest.fixture(scope="module")
def service(ray_serve, tiny_models_dir, tmp_path_factory):
    path = str(tiny_models_dir["whisper"])
    missing = str(tmp_path_factory.mktemp("nothing") / "missing.pt")
    config = {"models": [
        whisper("idle", path, lifecycle={"mode": "idle_unload", "idle_s": 1.5}),
        whisper("race", path, lifecycle={"mode": "idle_unload", "idle_s": 0.3}),
        whisper("unused", path, lifecycle={"mode": "idle_unload", "idle_s": 1}),
        whisper("demand", path, lifecycle={"mode": "on_demand"}),
        whisper("offload", path, lifecycle={"mode": "offload", "idle_s": 0.5}),
        whisper("pinned", path, lifecycle={"mode": "idle_unload", "idle_s": 0.5, "pin": True}),
        whisper("resident", path, lifecycle={"mode": "resident"}),
        whisper("broken", missing, lifecycle={"mode": "idle_unload", "idle_s": 1}),
        whisper("zero", path, lifecycle={"mode": "scale_to_zero", "idle_s": 1},
                deployment={**SMALL, "autoscaling_config": FAST_AUTOSCALING,
                            "graceful_shutdown_wait_loop_s": 0.1,
                            "graceful_shutdown_timeout_s": 1}),
    ]}
    with deployed(config):
        wait_for(lambda: httpx.get(ray_serve + "/health").status_code == 200, 90,
                 what="the service")
        yield ray_serve


WAV = wav_bytes(make_clip(2, 3.0))


def transcribe(url: str, model: str) -> httpx.Response:
    return httpx.post(url + "/v1/audio/transcriptions", data={"model": model, "language": "en"},
                      files={"file": ("a.wav", WAV)}, timeout=120)


def status(url: str, model: str) -> dict:
    return httpx.get(url + "/v1/status", timeout=30).json()["models"][model]


def state_is(url, model, *states):
    return lambda: status(url, model).get("state") in states


def test_idle_unload_returns_memory_and_reloads(service):
    never_loaded_rss = status(service, "demand")["rss_bytes"]  # on_demand: nothing loaded yet
    assert status(service, "demand")["state"] == "unloaded"
    assert transcribe(service, "idle").status_code == 200
    loaded = status(service, "idle")
    assert loaded["state"] == "loaded"
    wait_for(state_is(service, "idle", "unloaded"), 15, what="idle unload")
    unloaded = status(service, "idle")
    assert unloaded["events"]["unload"] >= 1
    assert unloaded["rss_bytes"] - never_loaded_rss < 100 * 2**20, (unloaded, never_loaded_rss)
    r = transcribe(service, "idle")
    assert r.status_code == 200 and r.json()["text"]
    assert status(service, "idle")["events"]["load"] == loaded["events"]["load"] + 1


def test_model_loaded_at_start_and_never_used_still_unloads(service):
    wait_for(state_is(service, "unused", "unloaded"), 20, what="unload without any request")
    assert status(service, "unused")["events"] == {"load": 1, "unload": 1, "offload": 0,
                                                    "restore": 0}


def test_pinned_and_resident_never_unload(service):
    assert transcribe(service, "pinned").status_code == 200
    assert transcribe(service, "idle").status_code == 200
    # the clock: "idle" (idle_s 1.5) unloading means "pinned" (idle_s 0.5) had time to
    wait_for(state_is(service, "idle", "unloaded"), 15, what="idle unload")
    for name in ("pinned", "resident"):
        s = status(service, name)
        assert s["state"] == "loaded" and s["events"]["unload"] == 0, s


def test_on_demand_loads_per_batch_and_drops_after(service):
    before = status(service, "demand")["events"]
    assert transcribe(service, "demand").status_code == 200
    wait_for(state_is(service, "demand", "unloaded"), 10, what="on_demand drop")
    after = status(service, "demand")["events"]
    assert after["load"] == before["load"] + 1 and after["unload"] == before["unload"] + 1


def test_offload_keeps_weights_in_host_ram_and_restores(service):
    assert transcribe(service, "offload").status_code == 200
    wait_for(state_is(service, "offload", "offloaded"), 10, what="offload")
    s = status(service, "offload")
    assert s["device"] == "cpu" and s["device_memory_bytes"] is None  # on CPU: host RAM
    assert transcribe(service, "offload").status_code == 200
    s = status(service, "offload")
    assert s["state"] == "loaded" and s["events"]["unload"] == 0  # never reloaded from disk


def test_requests_around_the_idle_deadline_never_fail(service):
    rng = random.Random(7)
    codes = []

    def burst(n):
        return [r.status_code for r in ThreadPoolExecutor(n).map(
            lambda _: transcribe(service, "race"), range(n))]

    for _ in range(12):
        codes.extend(burst(rng.choice([1, 1, 3])))
        time.sleep(rng.uniform(0.2, 0.45))  # the gap is the test: around idle_s = 0.3
    assert codes and set(codes) == {200}, codes
    assert status(service, "race")["events"]["unload"] >= 1  # the race was really exercised


def test_failed_load_is_503_with_cause_and_retried(service):
    first = transcribe(service, "broken")
    assert first.status_code == 503
    message = first.json()["error"]["message"]
    assert "broken" in message and "missing.pt" in message and "does not exist" in message
    replica = status(service, "broken")["replica"]
    assert transcribe(service, "resident").status_code == 200  # the other model keeps serving
    assert transcribe(service, "broken").status_code == 503
    s = status(service, "broken")
    assert s["load_attempts"] >= 2 and s["state"] == "failed"  # retried on the next request
    assert s["replica"] == replica  # and Ray did not restart the replica


def test_admin_unload_and_load(service):
    r = httpx.post(service + "/v1/models/resident/unload", timeout=60)
    assert r.status_code == 200 and r.json()["state"] == "unloaded"
    r = httpx.post(service + "/v1/models/resident/load", timeout=60)
    assert r.status_code == 200 and r.json()["state"] == "loaded"
    assert httpx.post(service + "/v1/models/nope/load").status_code == 404


def _alive_zero_replicas() -> int:
    """Replica actors of the "zero" deployment still alive, from the GCS (no dashboard)."""
    import ray

    return sum(1 for a in ray.util.list_named_actors(all_namespaces=True)
               if "model-zero" in a["name"])


def test_scale_to_zero_frees_the_replica_and_cold_starts(service):
    # requests sent while the deployment starts from zero all wait and succeed
    with ThreadPoolExecutor(4) as pool:
        codes = [r.status_code for r in pool.map(lambda _: transcribe(service, "zero"), range(4))]
    assert codes == [200] * 4
    assert _alive_zero_replicas() == 1
    wait_for(lambda: status(service, "zero").get("replicas") == 0, 60, what="zero replicas")
    wait_for(lambda: _alive_zero_replicas() == 0, 30, what="the replica actor to exit")
    assert status(service, "zero")["state"] == "zero_replicas"
    assert transcribe(service, "zero").status_code == 200
