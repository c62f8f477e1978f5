"""Typed configuration for the whole application (what `args:` in a Serve config holds).

Our own fields are typed and documented here; Ray's deployment options pass through as a dict
(`deployment:`) that Ray itself validates, so they always mean what Ray's docs say.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Mode = Literal["resident", "offload", "idle_unload", "on_demand", "scale_to_zero"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored


class BatchingConfig(_Strict):
    """Dynamic batching (`@serve.batch`), applied through the deployment's user_config.

    To change it on a running service without restarting replicas, override the deployment's
    user_config in the Serve config (README, "Configuration"); a change to `args` restarts.
    """
    max_batch_size: int = Field(8, ge=1, le=256,
                                description="Most requests decoded together in one batch.")
    batch_wait_timeout_s: float = Field(
        0.05, ge=0, le=10,
        description="Seconds a partial batch waits for more requests before it runs.")


class LifecycleConfig(_Strict):
    """When the weights are loaded, moved and dropped (docs/configuration.md has the table)."""
    mode: Mode = Field("resident", description=(
        "resident: loaded at start, never unloaded. offload: weights move to host RAM after "
        "idle_s. idle_unload: weights dropped after idle_s. on_demand: loaded per batch, "
        "dropped when no request waits. scale_to_zero: replicas stop after idle_s."))
    idle_s: float = Field(300.0, description=(
        "Seconds without requests before offload / unload / scale to zero. 0 means at once "
        "when the last request finishes; -1 means never (same as pin)."))
    pin: bool = Field(False, description="Never unload or offload, whatever the mode says.")

    @field_validator("idle_s")
    @classmethod
    def _idle(cls, v: float) -> float:
        if v < 0 and v != -1:
            raise ValueError("idle_s must be >= 0 seconds, or -1 for never")
        return v


class ModelConfig(_Strict):
    name: str = Field(min_length=1, description="Name clients send as `model`.")
    aliases: list[str] = Field(default_factory=list,
                               description="Other names accepted for this model (e.g. whisper-1).")
    engine: Literal["whisper", "sensevoice"] = Field(
        description="whisper (openai-whisper) or sensevoice (funasr SenseVoiceSmall).")
    model: str = Field(min_length=1, description=(
        "Official model name / hub id (downloaded where there is internet: `base`, "
        "`large-v3`, `iic/SenseVoiceSmall`) or a local path (checkpoint file for whisper, "
        "model directory for SenseVoice). Relative paths are taken from the directory "
        "`serve run` starts in."))
    device: str = Field("auto", description="auto (CUDA when torch sees a GPU, else CPU), cpu, cuda, cuda:N.")
    build_random: str | None = Field(None, description=(
        "Offline testing only: if `model` is a path that does not exist, build a random-weight "
        "model of these dimensions there first (see serve_app.tiny_models). Output is noise."))
    engine_options: dict[str, Any] = Field(default_factory=dict, description=(
        "Keyword arguments for the engine (see its docstring). whisper: sample_len, fp16, "
        "download_root, no_speech_threshold, logprob_threshold, compression_ratio_threshold, "
        "temperature_fallback (null: off), encoder_batch_size. sensevoice: vad_model, dither, "
        "ncpu, max_segment_s, vad_max_end_silence_ms, max_batch_segments, hub."))
    batching: BatchingConfig = Field(default_factory=BatchingConfig,
                                     description="Dynamic batching across requests.")
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig,
                                       description="When weights load, move and drop.")
    deployment: dict[str, Any] = Field(default_factory=dict, description=(
        "Ray Serve deployment options, passed through as Ray defines them: num_replicas, "
        "ray_actor_options (num_gpus may be fractional, e.g. 0.25, to share a GPU), "
        "autoscaling_config, max_ongoing_requests, max_queued_requests, ..."))

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        ongoing = self.deployment.get("max_ongoing_requests")
        if ongoing is not None and ongoing < self.batching.max_batch_size:
            raise ValueError(
                f"model {self.name!r}: deployment.max_ongoing_requests ({ongoing}) is smaller "
                f"than batching.max_batch_size ({self.batching.max_batch_size}): batches could "
                "never fill")
        if self.lifecycle.mode == "scale_to_zero":
            auto = self.deployment.get("autoscaling_config") or {}
            if auto.get("min_replicas", 0) != 0:
                raise ValueError(f"model {self.name!r}: mode scale_to_zero needs "
                                 "autoscaling_config.min_replicas 0 (or leave it out)")
            if "num_replicas" in self.deployment:
                raise ValueError(f"model {self.name!r}: mode scale_to_zero autoscales; "
                                 "remove deployment.num_replicas")
        return self

    @property
    def names(self) -> list[str]:
        return [self.name, *self.aliases]

    def resolved_model(self, base: Path | None = None) -> str:
        """`model` with a relative local path made absolute (replicas run in other dirs)."""
        m = self.model
        if m.startswith(("./", "../")) or (not m.startswith("/") and m.endswith((".pt", ".pth"))):
            return str(((base or Path.cwd()) / m).resolve())
        return m


class IngressConfig(_Strict):
    max_upload_mb: float = Field(100.0, gt=0, description="Largest upload accepted, in MiB (413 above).")
    max_duration_s: float = Field(3 * 3600.0, gt=0,
                                  description="Longest audio accepted, in seconds (413 above).")
    request_timeout_s: float = Field(
        900.0, gt=0, description="Seconds the ingress waits for a model before answering 504.")
    asr_model: str | None = Field(None, description=(
        "Model used by /asr and /detect-language (which have no model field); default: the "
        "first whisper model, else the first model."))
    deployment: dict[str, Any] = Field(
        default_factory=lambda: {"ray_actor_options": {"num_cpus": 0.2}},
        description="Ray Serve deployment options for the ingress.")


class AppConfig(_Strict):
    models: list[ModelConfig] = Field(min_length=1, description=(
        "The models served, at least one; each becomes its own Ray Serve deployment."))
    ingress: IngressConfig = Field(default_factory=IngressConfig,
                                   description="The HTTP front door.")

    @model_validator(mode="after")
    def _unique_names(self) -> "AppConfig":
        seen: dict[str, str] = {}
        for m in self.models:
            for n in m.names:
                if n in seen:
                    raise ValueError(f"models: name {n!r} is used by both {seen[n]!r} and "
                                     f"{m.name!r}; names and aliases must be unique")
                seen[n] = m.name
        if self.ingress.asr_model and self.ingress.asr_model not in seen:
            raise ValueError(f"ingress.asr_model {self.ingress.asr_model!r} is not a configured "
                             f"model; known: {', '.join(seen)}")
        return self

    def model_by_name(self, name: str) -> ModelConfig | None:
        for m in self.models:
            if name in m.names:
                return m
        return None

    @property
    def asr_model(self) -> ModelConfig:
        if self.ingress.asr_model:
            return self.model_by_name(self.ingress.asr_model)
        return next((m for m in self.models if m.engine == "whisper"), self.models[0])


def load_config(path: str | Path) -> AppConfig:
    """Read a Serve config file and validate the `args:` of its first application."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    args = data["applications"][0].get("args", {}) if "applications" in data else data
    return AppConfig.model_validate(args)


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md), from the fields themselves."""
    sections = [("args", AppConfig), ("ingress", IngressConfig), ("models[]", ModelConfig),
                ("models[].batching", BatchingConfig), ("models[].lifecycle", LifecycleConfig)]
    out = ["# Configuration reference", "",
           "Generated by `python -m serve_app.config`; every field of a Serve config's `args:`.",
           ""]
    for title, model in sections:
        out += [f"## `{title}`", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if field.is_required():
                default = "required"
            else:
                value = field.default_factory() if field.default_factory else field.default
                default = "see below" if isinstance(value, BaseModel) else f"`{value!r}`"
            kind = (field.annotation.__name__ if isinstance(field.annotation, type)
                    else re.sub(r"[\w]+\.", "", str(field.annotation)))  # drop module paths
            kind = kind.replace("|", "\\|")
            out.append(f"| `{name}` | {kind} | {default} | {field.description or ''} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(reference_markdown())
