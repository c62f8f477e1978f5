"""The deployment files validate: Ray cluster launcher config, Serve config, KubeRay manifest,
Grafana dashboard. Fast, no network, no Ray instance started."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from serve_app.config import AppConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster.yaml"
SERVE_CLUSTER = ROOT / "configs" / "cluster.yaml"
RAYSERVICE = ROOT / "configs" / "kuberay" / "rayservice.yaml"
DOCKERFILE = ROOT / "configs" / "kuberay" / "Dockerfile"
DASHBOARD = ROOT / "configs" / "grafana" / "asr-dashboard.json"
METRICS_PY = ROOT / "serve_app" / "metrics.py"


# -- Ray cluster launcher config -------------------------------------------------------------
def _ray_schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    if not path.exists():
        pytest.skip(f"the installed ray ships no autoscaler schema ({path.name})")
    return json.loads(path.read_text())


def test_cluster_yaml_matches_ray_schema():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(CLUSTER.read_text()), _ray_schema())


def test_cluster_yaml_passes_ray_up_validation():
    """What `ray up` does before it touches the cloud: fill defaults, then validate."""
    pytest.importorskip("jsonschema")
    _ray_schema()
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    validate_config(config)
    gpu = config["available_node_types"]["ray.worker.gpu"]
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"] <= config["max_workers"]


def test_cluster_yaml_installs_torch_first_and_sets_auth_mode():
    config = yaml.safe_load(CLUSTER.read_text())
    setup = config["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if "torch==2.13.0" in c)
    project_at = next(i for i, c in enumerate(setup) if "serve_app" in c and not c.startswith("#"))
    assert torch_at < project_at
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert "RAY_AUTH_MODE=" in start and "--metrics-export-port=8080" in start, key


# -- Serve config -----------------------------------------------------------------------------
def _validate_serve_config(data: dict) -> AppConfig:
    """Ray's schema for the whole file, ours for `args`, and Ray's checks of the options."""
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    from serve_app.app import build_app

    ServeDeploySchema.model_validate(data) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(data)
    (app,) = data["applications"]
    assert app["import_path"] == "serve_app.app:build_app"
    config = AppConfig.model_validate(app["args"])
    build_app(config)  # .options() rejects unknown ray_actor_options keys
    # AutoscalingConfig ignores unknown keys: catch misspelt ones here.
    known = set(getattr(AutoscalingConfig, "model_fields", None) or AutoscalingConfig.__fields__)
    for options in [m.deployment for m in config.models] + [config.ingress.deployment]:
        auto = options.get("autoscaling_config") or {}
        assert set(auto) <= known, f"unknown autoscaling_config keys: {set(auto) - known}"
    return config


def test_serve_cluster_config_validates():
    config = load_config(SERVE_CLUSTER)
    data = yaml.safe_load(SERVE_CLUSTER.read_text())
    assert data["proxy_location"] == "EveryNode"
    assert data["http_options"]["host"] == "0.0.0.0"
    assert _validate_serve_config(data) == config
    modes = {m.name: m.lifecycle.mode for m in config.models}
    assert "scale_to_zero" in modes.values()
    for m in config.models:
        actor = m.deployment["ray_actor_options"]
        assert 0 < actor["num_gpus"] <= 1, m.name
        env = actor["runtime_env"]["env_vars"]
        assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True", m.name


# -- KubeRay ------------------------------------------------------------------------------------
def _manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d]


def _rayservice() -> dict:
    (rs,) = [d for d in _manifests() if d["kind"] == "RayService"]
    assert rs["apiVersion"] == "ray.io/v1"
    return rs


def test_rayservice_serve_config_validates_and_matches_cluster_config():
    serve = _rayservice()["spec"]["serveConfigV2"]
    assert isinstance(serve, str), "serveConfigV2 must be a YAML string"
    data = yaml.safe_load(serve)
    _validate_serve_config(data)
    assert data == yaml.safe_load(SERVE_CLUSTER.read_text()), \
        "serveConfigV2 and configs/cluster.yaml differ: keep them in step"


def test_rayservice_cluster_spec():
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container.get("resources", {}).get("limits", {})

    (gpu,) = cluster["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert all(isinstance(v, str) for v in gpu["rayStartParams"].values())
    spec = gpu["template"]["spec"]
    (worker,) = spec["containers"]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    probe = worker["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/health", 8000)
    assert worker["image"] == head_container["image"]


def test_rayservice_services_expose_http_and_metrics():
    services = [d for d in _manifests() if d["kind"] == "Service"]
    ports = {p["port"] for s in services for p in s["spec"]["ports"]}
    assert {8000, 8080} <= ports
    (metrics,) = [s for s in services if any(p["port"] == 8080 for p in s["spec"]["ports"])]
    assert metrics["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    labels = _rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert metrics["spec"]["selector"].items() <= labels.items()  # the head's metrics too


def test_dockerfile_installs_torch_before_the_project():
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("RUN pip")]
    assert "torch==2.13.0" in lines[0] and lines[-1].rstrip().endswith("install --no-cache-dir .")
    assert DOCKERFILE.read_text().startswith("#") and "FROM python:3.11-slim" in DOCKERFILE.read_text()


# -- Grafana ----------------------------------------------------------------------------------
def _defined_metrics() -> dict[str, str]:
    """name -> kind of every metric serve_app/metrics.py defines."""
    src = METRICS_PY.read_text()
    found = re.findall(
        r"\b(Counter|Gauge|Histogram)\(\s*(?:name\s*=\s*)?[\"']([A-Za-z_:][A-Za-z0-9_:]*)[\"']",
        src)
    assert found, "no metric definitions found in serve_app/metrics.py"
    return {name: kind for kind, name in found}


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    exprs.append(value)
                elif key == "query" and isinstance(value, str):
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dash)
    return exprs


def test_dashboard_is_valid_json_with_a_prometheus_variable():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_dashboard_queries_only_metrics_that_exist():
    """Every ray_asr_* series the dashboard reads is defined in serve_app/metrics.py, with the
    suffix Ray's Prometheus export gives its kind; and every defined metric has a panel."""
    defined = _defined_metrics()
    suffixes = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
    used = set()
    for expr in _dashboard_exprs():
        for series in re.findall(r"\bray_(asr_[A-Za-z0-9_]+)", expr):
            match = [(name, kind) for name, kind in defined.items()
                     if any(series == name + s for s in suffixes[kind])]
            assert match, (f"dashboard queries ray_{series}, which serve_app/metrics.py does not "
                           f"define (defined: {sorted(defined)})")
            used.add(match[0][0])
    missing = set(defined) - used
    assert not missing, f"metrics with no dashboard panel: {sorted(missing)}"


def test_dashboard_uses_ray_serve_builtin_metrics():
    exprs = " ".join(_dashboard_exprs())
    for name in ("ray_serve_num_http_requests_total", "ray_serve_deployment_replica_healthy"):
        assert name in exprs
