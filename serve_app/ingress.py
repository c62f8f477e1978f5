"""HTTP front door: the OpenAI audio API and the whisper-asr-webservice API.

The ingress parses requests, checks limits, decodes audio (so bad input fails before any model
work), routes by model name to a model deployment, and formats the Transcript it gets back. It
holds no model and never imports torch, so it stays up while models scale to zero.
"""
from __future__ import annotations

import asyncio
import json
import logging

from ray import serve
from ray.serve.exceptions import BackPressureError
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import formats
from .audio import SAMPLE_RATE, AudioLimits, decode_audio, decode_pcm_s16le
from .config import AppConfig, ModelConfig
from .engines.base import TranscribeOptions
from .errors import (AudioTooLargeError, BadRequestError, GatewayTimeoutError,
                     ModelNotFoundError, OverloadedError, ServiceError)
from .metrics import IngressMetrics

log = logging.getLogger("ray.serve")


def _error_response(exc: ServiceError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
    return JSONResponse(exc.to_envelope(), status_code=exc.status, headers=headers)


def _bool(value: str | None, param: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise BadRequestError(f"{param} must be true or false, not {value!r}", param=param)


def _temperature(value: str | None) -> float:
    if value is None or value == "":
        return 0.0
    try:
        t = float(value)
    except ValueError:
        t = -1.0
    if not 0.0 <= t <= 1.0:
        raise BadRequestError(f"temperature must be a number from 0 to 1, not {value!r}",
                              param="temperature")
    return t


async def _read_upload(form: FormData, field: str) -> bytes:
    upload = form.get(field)
    if upload is None:
        raise BadRequestError(f"missing the audio file: send it as multipart field {field!r}",
                              param=field)
    if not isinstance(upload, UploadFile):
        raise BadRequestError(f"{field!r} must be a file upload, not a text field", param=field)
    return await upload.read()


class _ResponseCounter:
    """ASGI middleware: count responses by route and status (errors included)."""

    def __init__(self, app, metrics: IngressMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.responses.inc(tags={"route": scope.get("path", ""),
                                                 "status": str(message["status"])})
            await send(message)

        await self.app(scope, receive, counting_send)


@serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=256)
@serve.ingress()
class ASRIngress:
    def __init__(self, config: dict, handles: dict):
        self.config = AppConfig.model_validate(config)
        self.handles = handles  # model name -> DeploymentHandle
        ing = self.config.ingress
        self.limits = AudioLimits(max_bytes=int(ing.max_upload_mb * 2**20),
                                  max_duration_s=ing.max_duration_s)
        self.metrics = IngressMetrics()

    def __serve_build_asgi_app__(self):
        routes = [
            Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
            Route("/v1/audio/translations", self.translations, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{name:path}/load", self.admin_load, methods=["POST"]),
            Route("/v1/models/{name:path}/unload", self.admin_unload, methods=["POST"]),
            Route("/v1/status", self.status, methods=["GET"]),
            Route("/asr", self.asr, methods=["POST"]),
            Route("/detect-language", self.detect_language, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
        ]
        app = Starlette(routes=routes, exception_handlers={
            ServiceError: lambda request, exc: _error_response(exc),
            HTTPException: self._http_error,
            Exception: self._internal_error,
        })
        return _ResponseCounter(app, self.metrics)

    # -- errors ------------------------------------------------------------------------------
    @staticmethod
    def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse({"error": {"message": str(exc.detail), "type": error_type,
                                       "param": None, "code": None}},
                            status_code=exc.status_code)

    @staticmethod
    def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return _error_response(ServiceError("internal server error"))

    # -- shared steps -------------------------------------------------------------------------
    def _model(self, name: str | None, param: str = "model") -> ModelConfig:
        if not name:
            raise BadRequestError("you must give a model name", param=param)
        cfg = self.config.model_by_name(name)
        if cfg is None:
            known = ", ".join(n for m in self.config.models for n in m.names)
            raise ModelNotFoundError(f"the model {name!r} does not exist; available: {known}",
                                     param=param)
        return cfg

    async def _form(self, request: Request) -> FormData:
        length = request.headers.get("content-length")
        # Refuse an oversized upload before reading it (multipart adds a little framing).
        if length and length.isdigit() and int(length) > self.limits.max_bytes + 64 * 1024:
            raise AudioTooLargeError(
                f"the upload is {int(length) / 2**20:.1f} MiB; the limit is "
                f"{self.limits.max_bytes / 2**20:.0f} MiB")
        try:
            return await request.form(max_files=4, max_fields=64)
        except HTTPException:
            raise
        except Exception as exc:  # a malformed multipart body
            raise BadRequestError(f"could not parse the multipart form: {exc}") from None

    async def _decode(self, data: bytes, raw_pcm: bool, param: str):
        decoder = decode_pcm_s16le if raw_pcm else decode_audio
        return await asyncio.to_thread(decoder, data, self.limits, param)

    async def _call(self, model: ModelConfig, method: str, *args):
        """Call a model deployment; its errors come back as values and are raised here."""
        response = getattr(self.handles[model.name], method).remote(*args)
        try:
            result = await asyncio.wait_for(response, self.config.ingress.request_timeout_s)
        except BackPressureError:
            raise OverloadedError(f"model {model.name!r} is overloaded: too many queued "
                                  "requests; retry later") from None
        except asyncio.TimeoutError:
            response.cancel()
            raise GatewayTimeoutError(
                f"model {model.name!r} did not answer within "
                f"{self.config.ingress.request_timeout_s:.0f} s") from None
        if isinstance(result, ServiceError):
            raise result
        return result

    @staticmethod
    def _respond(body, media_type: str) -> Response:
        if isinstance(body, dict):
            return JSONResponse(body)
        return Response(body, media_type=media_type)

    # -- OpenAI API ---------------------------------------------------------------------------
    async def transcriptions(self, request: Request) -> Response:
        return await self._openai(request, "transcribe")

    async def translations(self, request: Request) -> Response:
        return await self._openai(request, "translate")

    async def _openai(self, request: Request, task: str) -> Response:
        form = await self._form(request)
        model = self._model(form.get("model"))
        fmt = form.get("response_format") or "json"
        formats.writer("openai", fmt)  # an unknown format fails before any work
        granularities = set(form.getlist("timestamp_granularities[]")
                            + form.getlist("timestamp_granularities"))
        if granularities - {"segment", "word"}:
            raise BadRequestError("timestamp_granularities[] takes segment and/or word",
                                  param="timestamp_granularities[]")
        words = "word" in granularities
        if words and fmt != "verbose_json":
            raise BadRequestError("timestamp_granularities[] needs response_format verbose_json",
                                  param="timestamp_granularities[]")
        stream = _bool(form.get("stream"), "stream", False)
        options = TranscribeOptions(
            task=task, language=(form.get("language") or None) if task == "transcribe" else None,
            prompt=form.get("prompt") or None, temperature=_temperature(form.get("temperature")),
            word_timestamps=words)
        audio = await self._decode(await _read_upload(form, "file"), False, "file")
        transcript = await self._call(model, "transcribe", audio, options)
        if stream:
            return StreamingResponse(self._sse(transcript), media_type="text/event-stream")
        return self._respond(*formats.render(transcript, fmt, words=words))

    @staticmethod
    async def _sse(transcript):
        """OpenAI's streaming events: one delta per segment, then the whole text."""
        for seg in transcript.segments:
            event = {"type": "transcript.text.delta", "delta": seg.text}
            yield f"data: {json.dumps(event)}\n\n"
        yield f"data: {json.dumps({'type': 'transcript.text.done', 'text': transcript.text})}\n\n"

    async def list_models(self, request: Request) -> Response:
        data = [{"id": n, "object": "model", "created": 0, "owned_by": m.engine}
                for m in self.config.models for n in m.names]
        return JSONResponse({"object": "list", "data": data})

    # -- whisper-asr-webservice API ---------------------------------------------------------
    async def asr(self, request: Request) -> Response:
        q = request.query_params
        model = self._model(q.get("model") or self.config.asr_model.name)
        fmt = q.get("output") or "txt"
        formats.writer("asr", fmt)
        task = q.get("task") or "transcribe"
        if task not in ("transcribe", "translate"):
            raise BadRequestError(f"task must be transcribe or translate, not {task!r}",
                                  param="task")
        words = _bool(q.get("word_timestamps"), "word_timestamps", False)
        _bool(q.get("vad_filter"), "vad_filter", False)  # validated; VAD is set per model
        options = TranscribeOptions(task=task, language=q.get("language") or None,
                                    prompt=q.get("initial_prompt") or None, word_timestamps=words)
        audio = await self._asr_audio(request)
        transcript = await self._call(model, "transcribe", audio, options)
        return self._respond(*formats.render(transcript, fmt, api="asr", words=words))

    async def _asr_audio(self, request: Request):
        raw_pcm = not _bool(request.query_params.get("encode"), "encode", True)
        form = await self._form(request)
        return await self._decode(await _read_upload(form, "audio_file"), raw_pcm, "audio_file")

    async def detect_language(self, request: Request) -> Response:
        model = self._model(request.query_params.get("model") or self.config.asr_model.name)
        audio = await self._asr_audio(request)
        code, probability = await self._call(model, "detect_language", audio[:30 * SAMPLE_RATE])
        return JSONResponse({"detected_language": formats.language_name(code),
                             "language_code": code, "confidence": probability})

    # -- operations ---------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def status(self, request: Request) -> Response:
        """Per model: engine, mode, replicas, and each running replica's own report."""
        replicas = await asyncio.to_thread(self._replica_counts)
        out = {}
        for m in self.config.models:
            running = replicas.get(m.name)
            entry = {"engine": m.engine, "mode": m.lifecycle.mode, "aliases": m.aliases,
                     "replicas": running}
            if running == 0:
                entry["state"] = "zero_replicas"
            else:
                try:
                    # Asking a replica never scales a deployment up: it has replicas already.
                    report = await asyncio.wait_for(self.handles[m.name].status.remote(), 10)
                    entry.update(report)
                except Exception as exc:  # starting up, or just stopped
                    entry["state"] = "unknown"
                    entry["detail"] = f"{type(exc).__name__}"
            out[m.name] = entry
        return JSONResponse({"models": out})

    def _replica_counts(self) -> dict[str, int | None]:
        try:
            app = serve.get_replica_context().app_name
            deployments = serve.status().applications[app].deployments
        except Exception:
            return {}
        counts = {}
        for m in self.config.models:
            d = deployments.get(deployment_name(m.name))
            if d is not None:
                counts[m.name] = sum(n for state, n in d.replica_states.items()
                                     if str(getattr(state, "value", state)) == "RUNNING")
        return counts

    async def admin_load(self, request: Request) -> Response:
        model = self._model(request.path_params["name"], param="name")
        return JSONResponse(await self._call(model, "load"))

    async def admin_unload(self, request: Request) -> Response:
        model = self._model(request.path_params["name"], param="name")
        if model.lifecycle.mode == "scale_to_zero":
            counts = await asyncio.to_thread(self._replica_counts)
            if counts.get(model.name) == 0:  # nothing to unload; don't start a replica for it
                return JSONResponse({"state": "zero_replicas"})
        return JSONResponse(await self._call(model, "unload"))


def deployment_name(model_name: str) -> str:
    """Ray deployment name of a model (one deployment per configured model)."""
    return "model-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in model_name)
