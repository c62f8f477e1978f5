"""Build random-weight models that load through the real loaders, with no download.

Tests use tiny dimensions; GPU benchmarks use real ones (whisper base, large-v3, SenseVoiceSmall
full size) so they measure true compute with no model hub. Everything is deterministic from a
seed. Usage::

    python -m serve_app.tiny_models OUTDIR [--whisper-dims tiny-random] [--seed 0]

writes OUTDIR/whisper-<dims>.pt (a `whisper.load_model` checkpoint), and the funasr model
directories for SenseVoiceSmall and fsmn-vad (see the functions below).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict
from pathlib import Path

import torch

# Whisper dimensions: name -> ModelDimensions fields. "tiny-random" is for tests: real audio
# context (30 s windows) and the real multilingual vocabulary, but a 64-wide, 2-layer network.
WHISPER_DIMS = {
    "tiny-random": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2,
                        n_audio_layer=2, n_vocab=51865, n_text_ctx=448, n_text_state=64,
                        n_text_head=2, n_text_layer=2),
    "tiny": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                 n_vocab=51865, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4),
    "base": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=512, n_audio_head=8, n_audio_layer=6,
                 n_vocab=51865, n_text_ctx=448, n_text_state=512, n_text_head=8, n_text_layer=6),
    "large-v3": dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20,
                     n_audio_layer=32, n_vocab=51866, n_text_ctx=448, n_text_state=1280,
                     n_text_head=20, n_text_layer=32),
    "large-v3-turbo": dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20,
                           n_audio_layer=32, n_vocab=51866, n_text_ctx=448, n_text_state=1280,
                           n_text_head=20, n_text_layer=4),
}


def init_random_(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter a random value that keeps activations in a sane range.

    Whisper creates `TextDecoder.positional_embedding` with torch.empty: left as it is, a random
    model decodes every clip to the same tokens and a batching test proves nothing.
    Matrices get normal(0, 1/sqrt(fan_in)); embeddings normal(0, 0.1); vectors (biases, norms)
    keep norms at 1 and biases small.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2 and ("embedding" in name or "embed" in name):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.dim() >= 2:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif "norm" in name.lower() or name.endswith("ln.weight") or "ln_" in name:
                p.copy_(1.0 + 0.02 * torch.randn(p.shape, generator=gen) if name.endswith("weight")
                        else 0.02 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def build_whisper(path: str | Path, dims: str = "tiny-random", seed: int = 0) -> Path:
    """Write a checkpoint in the official format ({"dims", "model_state_dict"}, fp16)."""
    from whisper.model import ModelDimensions, Whisper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_dims = ModelDimensions(**WHISPER_DIMS[dims])
    model = Whisper(model_dims)
    init_random_(model, seed)
    # Random cross-attention is nearly uniform over 1500 frames, which averages the audio away
    # and makes every clip decode alike; sharper attention and a louder output make the text
    # depend on the audio, so tests comparing clips can fail.
    with torch.no_grad():
        for block in model.decoder.blocks:
            block.cross_attn.query.weight.mul_(4.0)
            block.cross_attn.key.weight.mul_(4.0)
            block.cross_attn.out.weight.mul_(3.0)
    state = {k: v.half() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"dims": asdict(model_dims), "model_state_dict": state}, tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return path


def build_all(outdir: str | Path, whisper_dims: str = "tiny-random", seed: int = 0,
              force: bool = False) -> dict[str, Path]:
    """Build every model into outdir (skipping those already there unless force)."""
    outdir = Path(outdir)
    built = {}
    target = outdir / f"whisper-{whisper_dims}.pt"
    if force or not target.exists():
        build_whisper(target, whisper_dims, seed)
    built["whisper"] = target
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("--whisper-dims", default="tiny-random", choices=sorted(WHISPER_DIMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild models already present")
    args = parser.parse_args(argv)
    for name, path in build_all(args.outdir, args.whisper_dims, args.seed, args.force).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
