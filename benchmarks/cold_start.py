"""Lifecycle modes, measured: time to the first answer after idle, and memory while idle.

Starts a local Ray Serve on 127.0.0.1 with one deployment of the same Whisper model per mode,
sends one request to each, waits (polling /v1/status) until each mode has gone idle its own
way, then times the next request. Memory while idle is the replica's RSS (and GPU memory on a
GPU) from /v1/status; "never loaded" is an on_demand replica before its first request.

    python benchmarks/cold_start.py                          # CPU, whisper tiny dimensions
    python benchmarks/cold_start.py --whisper-dims large-v3 --device cuda --gpus 1
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from serve_app.synthetic import synthetic_clip, wav_bytes  # noqa: E402
from serve_app.tiny_models import RANDOM_WHISPER_OPTIONS, build_whisper  # noqa: E402

IDLE_STATE = {"idle_unload": "unloaded", "offload": "offloaded", "on_demand": "unloaded",
              "scale_to_zero": "zero_replicas", "resident": "loaded"}


def raw_load_seconds(path: str, device: str, repeats: int = 3) -> float:
    from serve_app.engines import make_engine

    times = []
    for _ in range(repeats):
        engine = make_engine("whisper", path, device)
        t0 = time.perf_counter()
        engine.load()
        times.append(time.perf_counter() - t0)
        engine.unload()
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--whisper-dims", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--gpus", type=float, default=0, help="GPUs in the local Ray (0: none)")
    p.add_argument("--idle-s", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3, help="idle -> first answer, per mode")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from serve_app.app import build_app

    path = str(build_whisper(Path(tempfile.mkdtemp()) / "whisper.pt", args.whisper_dims))
    raw = raw_load_seconds(path, args.device)
    per_replica_gpu = 1.0 / 8 if args.gpus else 0
    actor = {"num_cpus": 0.2, **({"num_gpus": per_replica_gpu} if args.gpus else {})}
    modes = ["resident", "offload", "idle_unload", "on_demand", "scale_to_zero"]
    models = []
    for mode in modes:
        deployment = {"ray_actor_options": actor}
        if mode == "scale_to_zero":
            deployment.update(
                autoscaling_config={"metrics_interval_s": 0.5, "look_back_period_s": 1,
                                    "upscale_delay_s": 0, "downscale_delay_s": 2},
                graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=1)
        models.append({"name": mode, "engine": "whisper", "model": path, "device": args.device,
                       "engine_options": {"sample_len": 8, **RANDOM_WHISPER_OPTIONS},
                       "lifecycle": {"mode": mode, "idle_s": args.idle_s},
                       "deployment": deployment})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=8, num_gpus=args.gpus or None, include_dashboard=False,
             log_to_driver=False)
    url = f"http://127.0.0.1:{port}"
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"models": models}), name="bench", route_prefix="/")
        status = lambda: httpx.get(url + "/v1/status", timeout=30).json()["models"]  # noqa
        never_loaded = status()["on_demand"]
        audio = wav_bytes(synthetic_clip(0, 5.0))

        def ask(model: str) -> float:
            t0 = time.perf_counter()
            r = httpx.post(url + "/v1/audio/transcriptions", data={"model": model},
                           files={"file": ("a.wav", audio)}, timeout=300)
            r.raise_for_status()
            return time.perf_counter() - t0

        results = {m: {"first": [], "rss": [], "gpu": []} for m in modes}
        for _ in range(args.rounds):
            for m in modes:
                ask(m)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # poll until every mode is idle its own way
                st = status()
                if all(st[m].get("state") == IDLE_STATE[m] for m in modes):
                    break
                time.sleep(0.2)
            else:
                raise SystemExit(f"modes did not go idle: { {m: st[m].get('state') for m in modes} }")
            for m in modes:
                results[m]["rss"].append(st[m].get("rss_bytes"))
                results[m]["gpu"].append(st[m].get("device_memory_bytes"))
            for m in modes:
                results[m]["first"].append(ask(m))
    finally:
        serve.shutdown()
        ray.shutdown()

    mb = lambda b: "-" if b is None else f"{b / 2**20:.0f}"  # noqa
    print(f"\nwhisper {args.whisper_dims} on {args.device}; raw load time (median) "
          f"{raw:.2f} s; never-loaded replica RSS {mb(never_loaded['rss_bytes'])} MB\n")
    print("| mode | first answer after idle (median s) | idle replica RSS (MB) "
          "| idle GPU memory (MB) |")
    print("|---|---|---|---|")
    for m in modes:
        r = results[m]
        rss = [x for x in r["rss"] if x is not None]
        gpu = [x for x in r["gpu"] if x is not None]
        print(f"| {m} | {statistics.median(r['first']):.2f} | "
              f"{mb(statistics.median(rss)) if rss else '- (no replica)'} | "
              f"{mb(statistics.median(gpu)) if gpu else '-'} |")


if __name__ == "__main__":
    main()
