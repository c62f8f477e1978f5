import os

import pytest

# Keep torch and funasr from fighting over the two cores with Ray workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    """Every tiny random-weight model, built once per test session."""
    from serve_app.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("models"))

