"""Every metric the service exports, defined once.

Ray's own metric objects: they appear on each node's metrics export port (Prometheus format,
with a `ray_` prefix, counters ending in `_total`) and in the Ray dashboard, tagged by Ray
Serve with the deployment, replica and application.
"""
from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

_LATENCY_S = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]


class ModelMetrics:
    """Metrics of one model deployment replica."""

    def __init__(self, model: str):
        tags = {"model": model}
        self.requests = Counter("asr_model_requests", "Requests answered by the model replica.",
                                tag_keys=("model", "outcome"))
        self.batch_size = Histogram("asr_batch_size", "Requests decoded together in one batch.",
                                    boundaries=[1, 2, 4, 8, 16, 32, 64], tag_keys=("model",))
        self.batch_seconds = Histogram("asr_batch_seconds", "Wall time of one batch inference.",
                                       boundaries=_LATENCY_S, tag_keys=("model",))
        self.audio_seconds = Counter("asr_audio_seconds", "Seconds of audio transcribed.",
                                     tag_keys=("model",))
        self.loaded = Gauge("asr_model_loaded",
                            "1 when the weights are on the device, 0.5 offloaded, 0 unloaded.",
                            tag_keys=("model",))
        self.lifecycle_seconds = Histogram(
            "asr_model_lifecycle_seconds", "Duration of load, unload, offload and restore.",
            boundaries=_LATENCY_S, tag_keys=("model", "event"))
        for m in (self.requests, self.batch_size, self.batch_seconds, self.audio_seconds,
                  self.loaded, self.lifecycle_seconds):
            m.set_default_tags(dict(tags))  # Ray adds its own tags to the dict it is given
        self.loaded.set(0)

    def on_lifecycle(self, event: str, seconds: float) -> None:
        self.lifecycle_seconds.observe(seconds, tags={"event": event})

    def set_state(self, state: str) -> None:
        self.loaded.set({"loaded": 1.0, "offloaded": 0.5}.get(state, 0.0))


class IngressMetrics:
    def __init__(self):
        self.responses = Counter("asr_http_responses", "HTTP responses by route and status.",
                                 tag_keys=("route", "status"))
        self.decode_seconds = Histogram("asr_decode_seconds", "Time to decode an upload.",
                                        boundaries=[0.01, 0.05, 0.1, 0.5, 1, 5, 30])
