"""Fractional GPUs: replicas share one GPU. This machine has none, so Ray is started with two
declared (fake) GPUs: Ray's placement is real, and the engines must fall back to the CPU
because torch finds no CUDA device behind CUDA_VISIBLE_DEVICES."""
from __future__ import annotations

import httpx
import pytest
import torch

from serve_app.tiny_models import RANDOM_WHISPER_OPTIONS

from .clips import make_clip
from .serve_harness import deployed, wait_for, wav_bytes

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fractional_replicas_share_gpu_and_fall_back_to_cpu(ray_serve, tiny_models_dir):
    import ray

    assert ray.cluster_resources().get("GPU") == 2
    config = {"models": [
        {"name": "whisper-half", "engine": "whisper", "model": str(tiny_models_dir["whisper"]),
         "engine_options": {"sample_len": 8, **RANDOM_WHISPER_OPTIONS},
         "deployment": {"ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.5}}},
        {"name": "sensevoice-quarter", "engine": "sensevoice",
         "model": str(tiny_models_dir["sensevoice"]),
         "deployment": {"ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.25}}},
    ]}
    with deployed(config):
        wait_for(lambda: httpx.get(ray_serve + "/health").status_code == 200, 60, what="service")
        wav = wav_bytes(make_clip(1, 3.0))
        for model in ("whisper-half", "sensevoice-quarter"):
            r = httpx.post(ray_serve + "/v1/audio/transcriptions", data={"model": model},
                           files={"file": ("a.wav", wav)}, timeout=120)
            assert r.status_code == 200, r.text
        models = httpx.get(ray_serve + "/v1/status").json()["models"]
        half, quarter = models["whisper-half"], models["sensevoice-quarter"]
        assert half["gpu_ids"] == quarter["gpu_ids"] and len(half["gpu_ids"]) == 1
        assert half["device"] == quarter["device"] == "cpu"
        # Ray's own accounting: 0.75 of the two GPUs is in use while both replicas run
        used = ray.cluster_resources()["GPU"] - ray.available_resources().get("GPU", 0)
        assert used == pytest.approx(0.75)
