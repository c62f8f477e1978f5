"""A small, picklable error hierarchy.

Every error the service raises on purpose carries its HTTP status and the OpenAI error
`type`, so the ingress turns any of them into one envelope:
``{"error": {"message", "type", "param", "code"}}``. They cross Ray actor boundaries, so
they keep all state in plain attributes (``BaseException.__reduce__`` pickles ``__dict__``).
"""
from __future__ import annotations


class ServiceError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param

    def to_envelope(self) -> dict:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


class BadRequestError(ServiceError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


# --- audio input -------------------------------------------------------------------------
class AudioError(BadRequestError):
    """Base of every problem with the uploaded audio; `param` names the form field."""


class EmptyAudioError(AudioError):
    code = "empty_audio"


class NotAudioError(AudioError):
    status, code = 415, "unsupported_media"


class CorruptAudioError(AudioError):
    code = "corrupt_audio"


class NoAudioStreamError(AudioError):
    status, code = 415, "no_audio_stream"


class AudioTooLargeError(AudioError):
    status, code = 413, "audio_too_large"


class AudioTooLongError(AudioError):
    status, code = 413, "audio_too_long"


# --- models ------------------------------------------------------------------------------
class ModelNotFoundError(ServiceError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class ModelLoadError(ServiceError):
    """The model could not be loaded (bad path, no download, out of memory)."""
    status, type, code = 503, "server_error", "model_unavailable"


class OverloadedError(ServiceError):
    status, type, code = 503, "server_error", "overloaded"


class GatewayTimeoutError(ServiceError):
    """The model did not answer within the ingress's request_timeout_s."""
    status, type, code = 504, "server_error", "timeout"
