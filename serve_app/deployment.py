"""One model deployment class for every engine: batching, live reconfigure, lifecycle.

Replicas receive decoded waveforms (the ingress decodes), batch them across requests with
`@serve.batch`, and run the engine in a worker thread so the event loop keeps collecting the
next batch. Errors travel back as values (`ServiceError` instances), never as exceptions, so
one bad request fails alone and the ingress needs no knowledge of Ray's exception wrapping.
"""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import ray
from ray import serve

from .audio import SAMPLE_RATE
from .config import ModelConfig
from .engines import TranscribeOptions, make_engine
from .errors import ServiceError
from .lifecycle import ModelHolder
from .metrics import ModelMetrics
from .transcript import Transcript

log = logging.getLogger("ray.serve")


def _as_service_error(exc: BaseException, model: str) -> ServiceError:
    if isinstance(exc, ServiceError):
        return exc
    log.exception("model %s: unexpected error", model, exc_info=exc)
    return ServiceError(f"internal error in model {model!r}; see the replica log")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class ASRDeployment:
    async def __init__(self, model_config: dict):  # Ray Serve awaits an async constructor
        cfg = ModelConfig.model_validate(model_config)
        self.name = cfg.name
        self.metrics = ModelMetrics(cfg.name)
        self.engine_name = cfg.engine
        if cfg.build_random:
            self._build_random(cfg)
        engine = make_engine(cfg.engine, cfg.model, cfg.device, **cfg.engine_options)
        self.holder = ModelHolder(engine, cfg.lifecycle, cfg.name,
                                  on_event=self._on_lifecycle)
        self.batches = 0
        self.batched_requests = 0
        self.largest_batch = 0
        self.batching: dict = {}  # as last applied by reconfigure
        self._gauge_task = asyncio.get_running_loop().create_task(self._report_state())
        if cfg.lifecycle.mode != "on_demand":
            # Loaded before the replica reports ready, so the first request (and a request
            # that scaled the deployment up from zero) finds the model in place; the idle
            # timer starts from here. A failure is recorded and answered per request (503,
            # retried), not raised: raising would make Ray restart the replica in a loop.
            try:
                await self.holder.load()
            except ServiceError:
                pass

    def _on_lifecycle(self, event: str, seconds: float) -> None:
        self.metrics.on_lifecycle(event, seconds)
        self.metrics.set_state(self.holder.state)

    async def _report_state(self, every_s: float = 5.0) -> None:
        # Ray drops a gauge's value once it is scraped unless it is reported again, so the
        # model state is re-reported on a timer, not only when it changes.
        while True:
            self.metrics.set_state(self.holder.state)
            await asyncio.sleep(every_s)

    @staticmethod
    def _build_random(cfg: ModelConfig) -> None:
        from pathlib import Path

        from . import tiny_models

        path = Path(cfg.model)
        if not path.exists():
            log.warning("model %s: building random-weight %s model (%s) at %s", cfg.name,
                        cfg.engine, cfg.build_random, path)
            builder = {"whisper": tiny_models.build_whisper,
                       "sensevoice": tiny_models.build_sensevoice}[cfg.engine]
            builder(path, cfg.build_random)

    def reconfigure(self, user_config: dict) -> None:
        """Batching changes from `serve deploy` apply here, without restarting the replica."""
        if "max_batch_size" in user_config:
            self._batch.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self._batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))
        self.batching = dict(user_config)

    # -- requests --------------------------------------------------------------------------
    async def transcribe(self, audio: np.ndarray,
                         options: TranscribeOptions) -> Transcript | ServiceError:
        with self.holder.request():
            try:
                # handles deliver numpy arrays as read-only views: engines get their own copy
                result = await self._batch(np.array(audio, dtype=np.float32), options)
            except Exception as exc:
                result = exc
        if isinstance(result, BaseException):
            result = _as_service_error(result, self.name)
        self.metrics.requests.inc(tags={"outcome": "ok" if isinstance(result, Transcript)
                                        else str(result.status)})
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _batch(self, audios: list[np.ndarray],
                     options: list[TranscribeOptions]) -> list[Transcript | BaseException]:
        try:
            async with self.holder.use() as engine:
                started = time.monotonic()
                results = await asyncio.to_thread(engine.transcribe_batch, audios, options)
        except ServiceError as exc:  # the model could not be made ready: every caller learns why
            return [exc] * len(audios)
        self.batches += 1
        self.batched_requests += len(audios)
        self.largest_batch = max(self.largest_batch, len(audios))
        self.metrics.batch_size.observe(len(audios))
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        self.metrics.audio_seconds.inc(sum(len(a) for a in audios) / SAMPLE_RATE)
        return results

    async def detect_language(self, audio: np.ndarray) -> tuple | ServiceError:
        with self.holder.request():
            try:
                async with self.holder.use() as engine:
                    result = await asyncio.to_thread(engine.detect_language, [np.array(audio)])
                result = result[0]
            except Exception as exc:
                result = exc
        return _as_service_error(result, self.name) if isinstance(result, BaseException) else result

    # -- operators ---------------------------------------------------------------------------
    async def status(self) -> dict:
        return {**self.holder.status(), "engine": self.engine_name, "batches": self.batches,
                "batched_requests": self.batched_requests, "largest_batch": self.largest_batch,
                "batching": self.batching,
                "replica": serve.get_replica_context().replica_id.unique_id,
                "gpu_ids": [str(g) for g in ray.get_runtime_context().get_accelerator_ids()
                            .get("GPU", [])]}

    async def load(self) -> dict | ServiceError:
        try:
            await self.holder.load()
        except ServiceError as exc:
            return exc
        return await self.status()

    async def unload(self) -> dict:
        await self.holder.unload(force=True)
        return await self.status()
