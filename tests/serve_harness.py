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


def deploy_declaratively(app: dict, timeout_s: float = 120) -> None:
    """Apply a Serve config application the way `serve deploy` does (code version from the
    config, so a change to user_config alone reconfigures replicas in place)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    client = _get_global_client()
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": [app]}))
    wait_for(lambda: _app_status(app["name"]) == "RUNNING", timeout_s,
             what=f"application {app['name']} to run")


def _app_status(name: str) -> str | None:
    from ray import serve

    app = serve.status().applications.get(name)
    return None if app is None else str(getattr(app.status, "value", app.status))
