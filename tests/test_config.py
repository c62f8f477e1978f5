"""Config validation: bad configs are refused with a message that names the field."""
from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.app import model_deployment_options
from serve_app.config import AppConfig, load_config

WHISPER = {"name": "w", "engine": "whisper", "model": "base"}
SENSEVOICE = {"name": "s", "engine": "sensevoice", "model": "iic/SenseVoiceSmall"}


def refused(config: dict) -> str:
    with pytest.raises(ValidationError) as info:
        AppConfig.model_validate(config)
    return str(info.value)


@pytest.mark.parametrize("config, expected", [
    ({"models": []}, "models"),
    ({"models": [WHISPER, {**SENSEVOICE, "name": "w"}]}, "'w' is used by both"),
    ({"models": [{**WHISPER, "aliases": ["whisper-1"]}, {**SENSEVOICE, "aliases": ["whisper-1"]}]},
     "'whisper-1' is used by both"),
    ({"models": [{**WHISPER, "engine": "wav2vec"}]}, "models.0.engine"),
    ({"models": [{**WHISPER, "batching": {"max_batch_size": 0}}]}, "models.0.batching.max_batch_size"),
    ({"models": [{**WHISPER, "batching": {"max_batch_size": 16},
                  "deployment": {"max_ongoing_requests": 4}}]}, "max_ongoing_requests (4)"),
    ({"models": [{**WHISPER, "lifecycle": {"idle_s": -5}}]}, "models.0.lifecycle.idle_s"),
    ({"models": [{**WHISPER, "lifecycle": {"mode": "sleepy"}}]}, "models.0.lifecycle.mode"),
    ({"models": [{**WHISPER, "lifecycle": {"mode": "scale_to_zero"},
                  "deployment": {"autoscaling_config": {"min_replicas": 1}}}]}, "min_replicas 0"),
    ({"models": [{**WHISPER, "batchng": {}}]}, "models.0.batchng"),
    ({"models": [WHISPER], "ingress": {"max_upload_mb": -1}}, "ingress.max_upload_mb"),
    ({"models": [WHISPER], "ingress": {"asr_model": "nope"}}, "ingress.asr_model 'nope'"),
])
def test_invalid_configs_name_the_field(config, expected):
    assert expected in refused(config)


def test_scale_to_zero_takes_its_delay_from_idle_s():
    cfg = AppConfig.model_validate({"models": [
        {**WHISPER, "lifecycle": {"mode": "scale_to_zero", "idle_s": 42},
         "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.2}}]})
    opts = model_deployment_options(cfg.models[0])
    auto = opts["autoscaling_config"]
    assert (auto["min_replicas"], auto["downscale_to_zero_delay_s"]) == (0, 42)
    assert opts["user_config"] == {"max_batch_size": 4, "batch_wait_timeout_s": 0.2}


def test_asr_model_defaults_to_the_first_whisper_model():
    cfg = AppConfig.model_validate({"models": [SENSEVOICE, WHISPER]})
    assert cfg.asr_model.name == "w"
    assert cfg.model_by_name("s").engine == "sensevoice"


@pytest.mark.parametrize("path", sorted(Path("configs").glob("*.yaml")), ids=str)
def test_shipped_serve_configs_validate(path):
    if "kuberay" in path.name or "grafana" in path.name:
        pytest.skip("not a Serve config")
    assert load_config(path).models


def test_configuration_reference_is_up_to_date():
    from serve_app.config import reference_markdown

    assert Path("docs/configuration.md").read_text().strip() == reference_markdown().strip(), (
        "regenerate with: python -m serve_app.config > docs/configuration.md")
