import os

import pytest

# Keep torch and funasr from fighting over the two cores with Ray workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    """Every tiny random-weight model, built once per test session."""
    from serve_app.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("models"))



@pytest.fixture(scope="session")
def ray_serve():
    """One local Ray (with declared fake GPUs) and Serve on 127.0.0.1 for the whole session.

    Each e2e module deploys its own application with `deploy()` and deletes it afterwards.
    """
    import ray
    from ray import serve

    from .serve_harness import free_port

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = free_port()
    ray.init(num_cpus=8, num_gpus=2, include_dashboard=False, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
