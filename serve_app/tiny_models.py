"""Build random-weight models that load through the real loaders, with no download.

Tests use tiny dimensions; GPU benchmarks use real ones (whisper base, large-v3, SenseVoiceSmall
full size) so they measure true compute with no model hub. Everything is deterministic from a
seed. Usage::

    python -m serve_app.tiny_models OUTDIR [--whisper-dims tiny-random]
                                           [--sensevoice-dims tiny-random] [--seed 0] [--force]

writes OUTDIR/whisper-<dims>.pt (a `whisper.load_model` checkpoint), and the funasr model
directories OUTDIR/sensevoice-<dims>/ and OUTDIR/fsmn-vad/ (`funasr.AutoModel(model=DIR)`).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

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


# Whisper engine options for random-weight models: their windows always look like silence or
# failed decodes, so keep every window's text and skip temperature fallback (deterministic).
RANDOM_WHISPER_OPTIONS = {"no_speech_threshold": None, "temperature_fallback": None}


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


# ------------------------------------------------------------------------------------------
# funasr models: SenseVoiceSmall and fsmn-vad, as model directories that AutoModel loads.
# ------------------------------------------------------------------------------------------
SENSEVOICE_VOCAB_SIZE = 25055  # the real vocabulary; `ban_emo_unk` indexes id 25009
SENSEVOICE_BPE_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"  # the hub's file name

# Where the rich tags sit in the vocabulary. funasr's SenseVoiceSmall hard-codes the ids of
# the languages, the four main emotions, EMO_UNKNOWN and withitn/woitn (lid_int_dict,
# emo_dict, textnorm_int_dict in funasr/models/sense_voice/model.py); the other ids are ours.
SENSEVOICE_TAG_IDS = {
    "<|zh|>": 24884, "<|en|>": 24885, "<|yue|>": 24888, "<|ja|>": 24892, "<|ko|>": 24896,
    "<|nospeech|>": 24992,
    "<|Speech|>": 24993, "<|BGM|>": 24994, "<|Applause|>": 24995, "<|Laughter|>": 24996,
    "<|Cry|>": 24997, "<|Sneeze|>": 24998, "<|Breath|>": 24999, "<|Cough|>": 25000,
    "<|HAPPY|>": 25001, "<|SAD|>": 25002, "<|ANGRY|>": 25003, "<|NEUTRAL|>": 25004,
    "<|FEARFUL|>": 25005, "<|DISGUSTED|>": 25006, "<|SURPRISED|>": 25007,
    "<|EMO_UNKNOWN|>": 25009,
    "<|Sing|>": 25010, "<|Speech_Noise|>": 25011, "<|GBG|>": 25012, "<|Event_UNK|>": 25013,
    "<|withitn|>": 25016, "<|woitn|>": 25017,
}
# The first four encoder positions are the queries (language, emotion, event, text norm); a
# trained model emits one tag of the matching group at each of them.
_SV_LANG_TAGS = ["<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>"]
_SV_EMO_TAGS = ["<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|FEARFUL|>",
                "<|DISGUSTED|>", "<|SURPRISED|>", "<|EMO_UNKNOWN|>"]
_SV_EVENT_TAGS = ["<|Speech|>", "<|BGM|>", "<|Applause|>", "<|Laughter|>", "<|Cry|>",
                  "<|Sneeze|>", "<|Breath|>", "<|Cough|>"]
_SV_QUERY_LANGS = ["auto", "zh", "en", "yue", "ja", "ko"]  # keys of SenseVoiceSmall.lid_dict

# Encoder sizes. "full" is the real SenseVoiceSmall (about 234M parameters), so a GPU
# benchmark measures true compute without a download; "tiny-random" is for tests.
SENSEVOICE_DIMS = {
    "tiny-random": dict(output_size=64, attention_heads=2, linear_units=128, num_blocks=2,
                        tp_blocks=1),
    "full": dict(output_size=512, attention_heads=4, linear_units=2048, num_blocks=50,
                 tp_blocks=20),
}

_BPE_TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "speech recognition turns sound into words and words into text",
    "a model with random weights still says something different for every clip",
    "hello world, this is a small test of the batching path",
    "numbers like one two three and punctuation come from inverse text normalisation",
    "she sells sea shells by the sea shore on a sunny morning",
]

_SV_FRONTEND_CONF = dict(fs=16000, window="hamming", n_mels=80, frame_length=25,
                         frame_shift=10, lfr_m=7, lfr_n=6)
_VAD_FRONTEND_CONF = dict(fs=16000, window="hamming", n_mels=80, frame_length=25,
                          frame_shift=10, dither=0.0, lfr_m=5, lfr_n=1)


def _import_funasr():
    """Import funasr's model classes (which registers them) without its stdout notice."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import funasr.frontends.wav_frontend  # noqa: F401
        import funasr.models.fsmn_vad_streaming.model  # noqa: F401
        import funasr.models.sense_voice.model  # noqa: F401


def _filler_piece(i: int) -> str:
    """The i-th made-up word piece: consonant-vowel syllables, a third of them word-initial."""
    cons, vows = "bdfghjklmnprstvwz", "aeiou"
    syllables = [c + v for c in cons for v in vows]  # 85
    n, k, parts = len(syllables), i, []
    width = 2 if k < n * n else 3
    if width == 3:
        k -= n * n
    for _ in range(width):
        k, r = divmod(k, n)
        parts.append(syllables[r])
    return ("\u2581" if i % 3 == 0 else "") + "".join(parts)


def _write_sensevoice_bpe(path: Path) -> None:
    """A sentencepiece BPE model of the real vocabulary size with the tags at the real ids.

    Trained on a few lines (deterministic: one thread, no sampling), then laid out as ids
    0-2 <unk> <s> </s>, the trained pieces, made-up word pieces up to 25055, and the tags as
    user-defined symbols at SENSEVOICE_TAG_IDS (what funasr hard-codes).
    """
    import io

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_BPE_TEXT), model_writer=buf, model_type="bpe",
        vocab_size=200, hard_vocab_limit=False, character_coverage=1.0, num_threads=1,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(buf.getvalue())
    Piece = sp_pb2.ModelProto.SentencePiece
    specials = [(p.piece, p.score, p.type) for p in proto.pieces[:3]]
    trained = [(p.piece, p.score, p.type) for p in proto.pieces[3:]]
    taken = {p for p, _, _ in specials + trained} | set(SENSEVOICE_TAG_IDS)
    by_id = {i: tag for tag, i in SENSEVOICE_TAG_IDS.items()}
    pieces = specials + trained
    filler = 0
    while len(pieces) < SENSEVOICE_VOCAB_SIZE:
        idx = len(pieces)
        if idx in by_id:
            pieces.append((by_id[idx], 0.0, Piece.USER_DEFINED))
            continue
        word = _filler_piece(filler)
        filler += 1
        if word not in taken:
            taken.add(word)
            pieces.append((word, -1000.0 - idx, Piece.NORMAL))
    del proto.pieces[:]
    for piece, score, kind in pieces:
        proto.pieces.add(piece=piece, score=score, type=kind)
    proto.trainer_spec.vocab_size = SENSEVOICE_VOCAB_SIZE
    path.write_bytes(proto.SerializeToString())


def _write_mvn(path: Path, shift, scale) -> None:
    """Kaldi nnet text as funasr's load_cmvn reads it: features become (x + shift) * scale."""
    dim = len(shift)
    fmt = lambda v: " ".join(f"{float(x):.6f}" for x in v)  # noqa: E731
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(scale)} ]\n"
        "</Nnet>\n")


def _calibration_audio(seed: int, n: int = 12) -> list:
    """Deterministic clips (tones, chirps, noise, silence) used to fit the tiny models' heads."""
    import numpy as np

    rng = np.random.default_rng(seed + 1000)
    sr, clips = 16000, []
    for i in range(n):
        seconds = float(rng.uniform(1.0, 2.5))
        t = np.arange(int(sr * seconds)) / sr
        kind = i % 4
        if kind == 0:
            x = np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
        elif kind == 1:
            f0, f1 = rng.uniform(100, 4000, size=2)
            x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds)))
        elif kind == 2:
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 5) * t)
            x = rng.standard_normal(t.size) * envelope
        else:  # a burst in silence
            x = np.zeros(t.size)
            a, b = sorted(rng.integers(0, t.size, size=2))
            x[a:b] = np.sin(2 * np.pi * rng.uniform(200, 2000) * t[a:b])
        clips.append((x * rng.uniform(0.05, 0.5)).astype(np.float32))
    clips.append(np.zeros(sr, dtype=np.float32))  # silence
    clips.append((rng.standard_normal(sr) * 1e-4).astype(np.float32))  # near silence
    return clips


def _features(frontend, clips):
    """Padded features (B, T, D) and lengths through a funasr frontend, no dither."""
    import numpy as np
    from torch.nn.utils.rnn import pad_sequence

    feats, lens = [], []
    for clip in clips:
        f, n = frontend(torch.from_numpy(np.asarray(clip))[None, :], [len(clip)])
        feats.append(f[0, : int(n[0])])
        lens.append(int(n[0]))
    return pad_sequence(feats, batch_first=True), torch.tensor(lens)


def _sensevoice_states(model, feats, lens, langs: list[str], textnorms: list[str]):
    """Encoder output for a batch, row i with queries langs[i] and textnorms[i], built as
    SenseVoiceSmall.inference builds its input."""
    def query(idx: list[int]):
        return model.embed(torch.tensor(idx)[:, None])
    b = feats.shape[0]
    x = torch.cat([query([model.lid_dict[lang] for lang in langs]), query([1] * b),
                   query([2] * b), query([model.textnorm_dict[t] for t in textnorms]), feats],
                  dim=1)
    return model.encoder(x, lens + 4)


def _marker_dims(d: int) -> dict:
    """Hidden dims reserved for the query markers (the last 10 of the encoder width)."""
    base = d - 10
    return {"pos": [base + k for k in range(4)], "itn": base + 4,
            "lang": {lang: base + 5 + j for j, lang in enumerate(_SV_QUERY_LANGS[1:])}}


def _mark_query_positions(model, seed: int, alpha: float = 1.0) -> None:
    """Carry "this is query position k" from the first layer to the encoder output.

    Random layers mix the four query positions with the audio frames until a linear head can
    no longer tell them apart, so the tags would be random word pieces. Here a few hidden dims
    are reserved: the first layer writes into them the projection of its input on the query
    embeddings (one dim per query position, one for the text norm, one per language), and
    every later layer neither reads nor writes them, so the residual stream carries them
    unchanged to the output. The query embeddings are redrawn (see below); everything else
    stays random.
    """
    enc = model.encoder
    d = enc.output_size()
    marks = _marker_dims(d)
    m = [*marks["pos"], marks["itn"], *marks["lang"].values()]
    layer0 = enc.encoders0[0]
    # Query embeddings ~N(0, 1) like the normalised features (not 0.1: the position encoding
    # would swamp them); the language queries share one component, the two text-norm queries
    # another, as a trained model's would, so "position 0" and "position 3" read strongly.
    gen = torch.Generator().manual_seed(seed + 3)
    emb = model.embed.weight
    emb.copy_(torch.randn(emb.shape, generator=gen))
    shared = torch.randn(2, emb.shape[1], generator=gen)
    for idx in model.lid_dict.values():
        emb[idx] = 0.9 * shared[0] + 0.45 * emb[idx]
    for idx in model.textnorm_dict.values():
        emb[idx] = 0.9 * shared[1] + 0.45 * emb[idx]
    # The first layer's normalised input at the four query positions, for every query value.
    def query_input(idx: int, pos: int) -> torch.Tensor:
        x = torch.zeros(1, pos + 1, model.embed.embedding_dim)
        x[0, pos] = model.embed.weight[idx] * d ** 0.5
        x = enc.embed(x)  # the sinusoidal position encoding
        u = layer0.norm1(x)[0, pos]
        return u / u.norm()
    lang_u = {lang: query_input(i, 0) for lang, i in model.lid_dict.items()}
    mean_lang = torch.stack(list(lang_u.values())).mean(0)
    with_u = query_input(model.textnorm_dict["withitn"], 3)
    wo_u = query_input(model.textnorm_dict["woitn"], 3)
    # Rows so that marker i reads 1 on query input i and 0 on the others (the dual basis):
    # the query inputs share the position encoding, so they are far from orthogonal.
    targets = torch.stack([mean_lang, query_input(1, 1), query_input(2, 2), with_u + wo_u,
                           with_u - wo_u,
                           *[lang_u[lang] - mean_lang for lang in marks["lang"]]])
    duals = torch.linalg.pinv(targets.double()).T.float()  # (n_markers, input dim)
    duals = duals / duals.norm(dim=1, keepdim=True)
    rows = dict(zip(m, duals))
    for layer in [*enc.encoders0, *enc.encoders, *enc.tp_encoders]:
        att, ff = layer.self_attn, layer.feed_forward
        v0 = 2 * d  # linear_q_k_v's output rows are q, k, v
        if layer is not layer0:
            att.linear_q_k_v.weight[:, m] = 0.0  # read no marker
            ff.w_1.weight[:, m] = 0.0
        att.linear_q_k_v.weight[[v0 + i for i in m]] = 0.0  # write markers only in layer 0
        att.linear_q_k_v.bias[[v0 + i for i in m]] = 0.0
        att.fsmn_block.weight[m] = 0.0
        att.linear_out.weight[m] = 0.0
        att.linear_out.weight[:, m] = 0.0
        att.linear_out.bias[m] = 0.0
        ff.w_2.weight[m] = 0.0
        ff.w_2.bias[m] = 0.0
    for dim, row in rows.items():
        layer0.self_attn.linear_q_k_v.weight[2 * d + dim] = alpha * row
    for norm in (enc.after_norm, enc.tp_norm):
        norm.weight[m] = 1.0
        norm.bias[m] = 0.0


def _calibrate_sensevoice_head(model, feats, lens, seed: int) -> None:
    """Fit the tag rows of the CTC head so the random model talks like SenseVoice.

    A trained SenseVoiceSmall emits one tag per query position (language, emotion, event,
    text norm), then the text. The tag rows of ctc_lo read the query markers (see
    `_mark_query_positions`), scaled from the encoder states of the calibration audio so a
    tag wins at its position and loses everywhere else; a random direction per tag makes the
    pick within a group depend on the audio, and the language and text-norm markers steer the
    pick when the request names them. Blank gets a bias so about half the audio frames are
    blank, as in a trained CTC model. The other 25k rows stay random.
    """
    gen = torch.Generator().manual_seed(seed + 7)
    d = model.encoder.output_size()
    marks = _marker_dims(d)
    marker_set = {*marks["pos"], marks["itn"], *marks["lang"].values()}
    free = torch.tensor([i for i in range(d) if i not in marker_set])
    at = {k: [] for k in range(5)}  # encoder states by position class (4 = audio frames)
    lang_at0 = {lang: [] for lang in _SV_QUERY_LANGS}
    itn_at3 = {"withitn": [], "woitn": []}
    # Every query combination, each on a rotating third of the clips; on one clip each for a
    # deep model (the full-size forward pass costs ~20 s on a 2-core CPU).
    n_clips = feats.shape[0]
    deep = len(model.encoder.encoders) + len(model.encoder.tp_encoders) > 8
    per = 1 if deep else max(1, (n_clips + 2) // 3)
    combos = [(lang, tn) for lang in _SV_QUERY_LANGS for tn in ("withitn", "woitn")]
    rows = [(lang, tn, (c * per + j) % n_clips)
            for c, (lang, tn) in enumerate(combos) for j in range(per)]
    pick = torch.tensor([clip for _, _, clip in rows])
    # One batch: a forward pass streams every weight once (what costs on a CPU).
    out, out_lens = _sensevoice_states(model, feats[pick].clone(), lens[pick].clone(),
                                       [r[0] for r in rows], [r[1] for r in rows])
    for i, (lang, textnorm, _) in enumerate(rows):
        for k in range(4):
            at[k].append(out[i, k])
        at[4].append(out[i, 4: int(out_lens[i])])
        lang_at0[lang].append(out[i, 0])
        itn_at3[textnorm].append(out[i, 3])
    at = {k: torch.cat(v) if k == 4 else torch.stack(v) for k, v in at.items()}
    frames = at[4]
    ctc = model.ctc.ctc_lo
    gain, spread, steer = 20.0, 1.0, 12.0

    def marker_term(dim: int, k: int):
        """Weight and bias mapping marker `dim` to about +1 at position k, <= -1 elsewhere."""
        inside = at[k][:, dim]
        outside = torch.cat([frames[:, dim], *[at[j][:, dim] for j in range(4) if j != k]])
        lo, hi = float(inside.min()), float(outside.max())
        if lo <= hi:
            raise RuntimeError(f"query marker {k} does not separate ({lo:.3f} <= {hi:.3f})")
        mid, half = (lo + hi) / 2, (lo - hi) / 2
        w = torch.zeros(d)
        w[dim] = 1.0 / half
        return w, -mid / half

    def steer_term(dim: int, on: torch.Tensor, off: torch.Tensor):
        """Weight and bias mapping marker `dim` to about 1 on `on` states and 0 on `off`."""
        hi, lo = float(on[:, dim].mean()), float(off[:, dim].mean())
        w = torch.zeros(d)
        w[dim] = 1.0 / (hi - lo)
        return w, -lo / (hi - lo)

    for k, tags in enumerate([_SV_LANG_TAGS, _SV_EMO_TAGS, _SV_EVENT_TAGS,
                              ["<|withitn|>", "<|woitn|>"]]):
        w_pos, b_pos = marker_term(marks["pos"][k], k)
        hk = at[k]
        for tag in tags:
            r = torch.zeros(d)
            r[free] = torch.randn(len(free), generator=gen)
            proj = hk @ r
            r = r / (proj.std() + 1e-6)  # unit spread across the calibration clips
            a = gain * w_pos + spread * r
            c = gain * b_pos - spread * float(proj.mean() / (proj.std() + 1e-6))
            if k == 0:  # nospeech gets the mean push, so "auto" shifts every language alike
                names = list(marks["lang"]) if tag == "<|nospeech|>" else [tag[2:-2]]
                for lang in names:
                    w, b = steer_term(marks["lang"][lang], torch.stack(lang_at0[lang]),
                                      torch.stack(lang_at0["auto"]))
                    a, c = a + steer / len(names) * w, c + steer / len(names) * b
            if k == 3:
                on, off = itn_at3["withitn"], itn_at3["woitn"]
                if tag == "<|woitn|>":
                    on, off = off, on
                w, b = steer_term(marks["itn"], torch.stack(on), torch.stack(off))
                a, c = a + steer * w, c + steer * b
            tid = SENSEVOICE_TAG_IDS[tag]
            ctc.weight[tid] = a
            ctc.bias[tid] = c
    # Blank (id 0) wins about half of the audio frames.
    logits = ctc(frames)
    logits[:, 0] = -float("inf")
    ctc.weight[0] = 0.0
    ctc.bias[0] = torch.quantile(logits.max(dim=1).values, 0.5)


def build_sensevoice(outdir: str | Path, dims: str = "tiny-random", seed: int = 0) -> Path:
    """Write a SenseVoiceSmall model directory that `funasr.AutoModel(model=DIR)` loads.

    Files as on the hub: config.yaml, configuration.json (`file_path_metas`), model.pt (a
    state_dict), the sentencepiece model and am.mvn. Weights are random (deterministic from
    the seed); the CTC head's tag rows are fitted so each clip decodes to
    ``<|lang|><|EMO|><|Event|><|itn|>`` followed by audio-dependent made-up words.
    """


    _import_funasr()
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.models.sense_voice.model import SenseVoiceSmall

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    encoder_conf = dict(
        SENSEVOICE_DIMS[dims], dropout_rate=0.1, positional_dropout_rate=0.1,
        attention_dropout_rate=0.1, input_layer="pe", pos_enc_class="SinusoidalPositionEncoder",
        normalize_before=True, kernel_size=11, sanm_shfit=0, selfattention_layer_type="sanm")
    model_conf = dict(length_normalized_loss=True, sos=1, eos=2, ignore_id=-1)
    config = {
        "encoder": "SenseVoiceEncoderSmall", "encoder_conf": encoder_conf,
        "model": "SenseVoiceSmall", "model_conf": model_conf,
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend", "frontend_conf": dict(_SV_FRONTEND_CONF, cmvn_file=None),
    }
    _write_sensevoice_bpe(outdir / SENSEVOICE_BPE_NAME)

    # am.mvn from the calibration audio, so the network sees features near N(0, 1).
    clips = _calibration_audio(seed)
    raw_frontend = WavFrontend(**_SV_FRONTEND_CONF, dither=0.0)
    feats, lens = _features(raw_frontend, clips)
    valid = torch.cat([feats[i, : int(n)] for i, n in enumerate(lens)])
    mean, std = valid.mean(0), valid.std(0).clamp_min(1e-3)
    _write_mvn(outdir / "am.mvn", (-mean).tolist(), (1.0 / std).tolist())
    mask = (torch.arange(feats.shape[1])[None, :] < lens[:, None]).unsqueeze(-1)
    feats = (feats - mean) / std * mask

    torch.manual_seed(seed)  # module constructors draw from the global generator
    model = SenseVoiceSmall(encoder="SenseVoiceEncoderSmall", encoder_conf=encoder_conf,
                            input_size=80 * _SV_FRONTEND_CONF["lfr_m"],
                            vocab_size=SENSEVOICE_VOCAB_SIZE, **model_conf)
    init_random_(model, seed)
    model.eval()
    with torch.no_grad():
        _mark_query_positions(model, seed)
        _calibrate_sensevoice_head(model, feats, lens, seed)

    return _write_funasr_dir(outdir, model, config, "auto-speech-recognition",
                             tokenizer_conf={"bpemodel": SENSEVOICE_BPE_NAME})


def _write_funasr_dir(outdir: Path, model, config: dict, task: str, **metas) -> Path:
    """model.pt, config.yaml and configuration.json as a hub download lays them out."""
    torch.save(model.state_dict(), outdir / "model.pt")
    (outdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (outdir / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": task,
        "model": {"type": "funasr"}, "pipeline": {"type": "funasr-pipeline"},
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml", **metas,
                            "frontend_conf": {"cmvn_file": "am.mvn"}},
    }, indent=2))
    return outdir


# fsmn-vad: the real model's VAD settings, a small FSMN encoder.
_VAD_MODEL_CONF = dict(
    sample_rate=16000, detect_mode=1, snr_mode=0, max_end_silence_time=800,
    max_start_silence_time=3000, do_start_point_detection=True, do_end_point_detection=True,
    window_size_ms=200, sil_to_speech_time_thres=150, speech_to_sil_time_thres=150,
    speech_2_noise_ratio=1.0, do_extend=1, lookback_time_start_point=200,
    lookahead_time_end_point=100, max_single_segment_time=60000, snr_thres=-100.0,
    noise_frame_num_used_for_snr=100, decibel_thres=-100.0, speech_noise_thres=0.6,
    fe_prior_thres=0.0001, silence_pdf_num=1, sil_pdf_ids=[0], speech_noise_thresh_low=-0.1,
    speech_noise_thresh_high=0.3, output_frame_probs=False, frame_in_ms=10, frame_length_ms=25)
_VAD_ENCODER_CONF = dict(input_dim=400, input_affine_dim=32, fsmn_layers=2, linear_dim=32,
                         proj_dim=16, lorder=20, rorder=0, lstride=1, rstride=0,
                         output_affine_dim=32, output_dim=248)
VAD_SILENCE_DB = -50.0  # frames quieter than this (dBFS) are what the tiny VAD calls silence


def _frame_db(clip, n_frames: int):
    """Level of each 25 ms / 10 ms frame in dBFS."""
    import numpy as np

    x = np.pad(np.asarray(clip, dtype=np.float64), (0, 400))
    idx = np.arange(n_frames)[:, None] * 160 + np.arange(400)[None, :]
    return torch.from_numpy(10 * np.log10(np.mean(x[idx] ** 2, axis=1) + 1e-12)).float()


def build_fsmn_vad(outdir: str | Path, seed: int = 0) -> Path:
    """Write an fsmn-vad model directory that `funasr.AutoModel(model=DIR)` loads.

    config.yaml (the real VAD settings, a 2-layer 32-wide FSMN), configuration.json, model.pt
    and am.mvn. The weights are random except the silence unit of the output layer, fitted on
    calibration audio so frames quieter than VAD_SILENCE_DB read as silence: the VAD then
    splits at pauses, and louder audio is speech.
    """


    _import_funasr()
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.models.fsmn_vad_streaming.model import FsmnVADStreaming

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    clips = _calibration_audio(seed)
    feats, lens = _features(WavFrontend(**_VAD_FRONTEND_CONF), clips)
    valid = torch.cat([feats[i, : int(n)] for i, n in enumerate(lens)])
    mean, std = valid.mean(0), valid.std(0).clamp_min(1e-3)
    _write_mvn(outdir / "am.mvn", (-mean).tolist(), (1.0 / std).tolist())

    torch.manual_seed(seed)
    model = FsmnVADStreaming(encoder="FSMN", encoder_conf=_VAD_ENCODER_CONF, **_VAD_MODEL_CONF)
    init_random_(model, seed)
    model.eval()
    enc = model.encoder
    with torch.no_grad():
        hidden, silent = [], []
        for i, n in enumerate(lens.tolist()):
            x = ((feats[i, :n] - mean) / std)[None]
            x = enc.relu(enc.in_linear2(enc.in_linear1(x)))
            hidden.append(enc.out_linear1(enc.fsmn(x, None))[0])
            silent.append(_frame_db(clips[i], n) < VAD_SILENCE_DB)
        h, silent = torch.cat(hidden), torch.cat(silent)
        target = silent.float() * 2 - 1
        weight = torch.where(silent, 1.0 / silent.sum(), 1.0 / (~silent).sum())
        xb = torch.cat([h, torch.ones(len(h), 1)], dim=1).double()
        xtw = xb.T * weight.double()
        reg = 1e-3 * torch.eye(xb.shape[1], dtype=torch.float64)
        sol = torch.linalg.solve(xtw @ xb + reg, xtw @ target.double()).float()
        # The silence logit: 8 x the fit (about +-1), shifted by the speech units' usual
        # log-sum-exp so p(silence) is about 0.5 where the fit crosses 0. fsmn-vad takes
        # log(p) and log(1 - p): a second unit trailing the silence unit by 9 keeps p below
        # 0.9999, so float32 never rounds it to exactly 1 ("math domain error").
        out = enc.out_linear2.linear
        spread = torch.logsumexp(out(h)[:, 1:], dim=1).median()
        out.weight[0] = 8.0 * sol[:-1]
        out.bias[0] = 8.0 * sol[-1] + spread
        out.weight[1] = out.weight[0]
        out.bias[1] = out.bias[0] - 9.0

    config = {
        "frontend": "WavFrontendOnline", "frontend_conf": dict(_VAD_FRONTEND_CONF),
        "model": "FsmnVADStreaming", "model_conf": dict(_VAD_MODEL_CONF),
        "encoder": "FSMN", "encoder_conf": dict(_VAD_ENCODER_CONF),
    }
    return _write_funasr_dir(outdir, model, config, "voice-activity-detection")


def _build_dir_atomically(target: Path, build, force: bool) -> Path:
    """Run build(tmp_dir) and rename the result to target, so no reader sees half a model.

    A directory already there is kept unless force; when another process wins the race, its
    result is kept and ours is dropped.
    """
    import os
    import shutil
    import uuid

    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # A plain mkdir (not mkdtemp, which makes it private to us) with a name nobody else uses.
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        build(tmp)
        if target.exists():  # force: move the old one aside first
            old = tmp.with_suffix(".old")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # a concurrent builder got there first
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_all(outdir: str | Path, whisper_dims: str = "tiny-random", seed: int = 0,
              force: bool = False, sensevoice_dims: str = "tiny-random") -> dict[str, Path]:
    """Build every model into outdir (skipping those already there unless force).

    Returns {"whisper": OUTDIR/whisper-<dims>.pt, "sensevoice": OUTDIR/sensevoice-<dims>/,
    "vad": OUTDIR/fsmn-vad/}.
    """
    outdir = Path(outdir)
    built = {}
    target = outdir / f"whisper-{whisper_dims}.pt"
    if force or not target.exists():
        build_whisper(target, whisper_dims, seed)
    built["whisper"] = target
    built["sensevoice"] = _build_dir_atomically(
        outdir / f"sensevoice-{sensevoice_dims}",
        lambda d: build_sensevoice(d, sensevoice_dims, seed), force)
    built["vad"] = _build_dir_atomically(
        outdir / "fsmn-vad", lambda d: build_fsmn_vad(d, seed), force)
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("--whisper-dims", default="tiny-random", choices=sorted(WHISPER_DIMS))
    parser.add_argument("--sensevoice-dims", default="tiny-random",
                        choices=sorted(SENSEVOICE_DIMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild models already present")
    args = parser.parse_args(argv)
    built = build_all(args.outdir, args.whisper_dims, args.seed, args.force,
                      sensevoice_dims=args.sensevoice_dims)
    for name, path in built.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
