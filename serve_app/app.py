"""`build_app(config) -> Application`: the one place that binds the deployment graph.

Use it from a Serve config file::

    applications:
      - name: asr
        import_path: serve_app.app:build_app
        args: {models: [...], ingress: {...}}   # validated against AppConfig
"""
from __future__ import annotations

from pathlib import Path

from ray.serve import Application

from .config import AppConfig
from .deployment import ASRDeployment
from .ingress import ASRIngress, deployment_name


def model_deployment_options(model) -> dict:
    """Ray options for one model: the config's pass-through dict over our defaults."""
    options = dict(model.deployment)
    options.setdefault("max_ongoing_requests", max(32, 4 * model.batching.max_batch_size))
    if model.lifecycle.mode == "scale_to_zero":
        auto = dict(options.get("autoscaling_config") or {})
        auto.setdefault("min_replicas", 0)
        auto.setdefault("max_replicas", 1)
        auto.setdefault("initial_replicas", 0)
        # idle_s is the delay before the last replica goes; -1 (never) keeps one up.
        idle = model.lifecycle.idle_s
        auto.setdefault("downscale_to_zero_delay_s", 10**9 if idle == -1 else idle)
        auto.setdefault("downscale_delay_s", max(idle, 1.0) if idle != -1 else 600.0)
        options["autoscaling_config"] = auto
    # Batching lives in user_config, which Ray applies to running replicas through
    # reconfigure(). (Ray hashes an application's `args` into its code version, so a change
    # there restarts replicas; a `deployments: [{name, user_config}]` override does not.)
    options["user_config"] = {**(options.get("user_config") or {}),
                              **model.batching.model_dump()}
    options["name"] = deployment_name(model.name)
    return options


def build_app(config: AppConfig | dict) -> Application:
    config = AppConfig.model_validate(config) if isinstance(config, dict) else config
    base = Path.cwd()
    handles = {}
    for model in config.models:
        init_args = model.model_dump(exclude={"batching", "deployment"})
        init_args["model"] = model.resolved_model(base)
        handles[model.name] = ASRDeployment.options(**model_deployment_options(model)).bind(
            init_args)
    ingress = ASRIngress.options(**config.ingress.deployment)
    return ingress.bind(config.model_dump(), handles)
