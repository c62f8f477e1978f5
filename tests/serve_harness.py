"""Helpers for end-to-end tests against a real local Ray Serve."""
from __future__ import annotations

import contextlib
import socket
import time

from serve_app.synthetic import pcm_bytes, wav_bytes  # noqa: F401  (re-exported for tests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def deployed(config: dict, name: str = "asr", route_prefix: str = "/"):
    """Deploy build_app(config) as application `name`, delete it afterwards."""
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(config), name=name, route_prefix=route_prefix, blocking=False)
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
