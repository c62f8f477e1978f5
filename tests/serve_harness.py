"""Helpers for end-to-end tests against a real local Ray Serve."""
from __future__ import annotations

import contextlib
import io
import socket
import time

import av
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def deployed(config: dict, name: str = "asr"):
    """Deploy build_app(config) as application `name` at route "/", delete it afterwards."""
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(config), name=name, route_prefix="/", blocking=False)
    try:
        yield
    finally:
        serve.delete(name)


def wait_for(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    """Poll until predicate() returns a truthy value; fail after timeout_s (never hang)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")


def wav_bytes(audio: np.ndarray, rate: int = 16000) -> bytes:
    """Encode float32 mono samples as a 16-bit WAV file, in memory."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None, :],
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def pcm_bytes(audio: np.ndarray) -> bytes:
    return (audio * 32767).astype("<i2").tobytes()
