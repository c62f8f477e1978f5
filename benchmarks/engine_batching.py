"""Cross-request batching, measured: clips per second one by one vs. batched, side by side.

For each engine and each N in --sizes, the same N distinct clips are transcribed one at a time
and then as one `transcribe_batch` call, alternating, --repeats times; the table gives the
median throughput of each and their ratio. Models are random-weight builds of real dimensions
(serve_app.tiny_models), so no download is needed and the compute is the real model's.

    python benchmarks/engine_batching.py                       # CPU: whisper tiny dims
    python benchmarks/engine_batching.py --whisper-dims large-v3 --device cuda --plot out.png
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve_app.engines import TranscribeOptions, make_engine  # noqa: E402
from serve_app.synthetic import synthetic_clip  # noqa: E402
from serve_app.tiny_models import (RANDOM_WHISPER_OPTIONS, build_sensevoice,  # noqa: E402
                                   build_whisper)


def measure(engine, clips, options, repeats: int) -> tuple[float, float]:
    """Median seconds for one-by-one and for batched over `repeats` alternating runs."""
    engine.transcribe_batch(clips[:1], options[:1])  # warm-up: lazy imports, caches
    single, batched = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c, o in zip(clips, options):
            engine.transcribe_batch([c], [o])
        t1 = time.perf_counter()
        engine.transcribe_batch(clips, options)
        t2 = time.perf_counter()
        single.append(t1 - t0)
        batched.append(t2 - t1)
    return statistics.median(single), statistics.median(batched)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="whisper,sensevoice")
    p.add_argument("--whisper-dims", default="tiny")
    p.add_argument("--sensevoice-dims", default="tiny-random")
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", default="1,4,8,16")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    p.add_argument("--tokens", type=int, default=32, help="whisper: tokens decoded per clip")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--plot", help="write a PNG of clips/s against N")
    args = p.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="asr-bench-"))
    rows = []
    for name in args.engines.split(","):
        if name == "whisper":
            path = build_whisper(tmp / "whisper.pt", args.whisper_dims)
            # A random model rarely emits end-of-text: every clip decodes exactly --tokens.
            engine = make_engine("whisper", str(path), args.device, sample_len=args.tokens,
                                 suppress_eot=True, **RANDOM_WHISPER_OPTIONS)
            label = f"whisper {args.whisper_dims}"
        else:
            path = build_sensevoice(tmp / "sensevoice", args.sensevoice_dims)
            engine = make_engine("sensevoice", str(path), args.device)
            label = f"sensevoice {args.sensevoice_dims}"
        engine.load()
        clips = [synthetic_clip(i, args.seconds) for i in range(max(sizes))]
        options = [TranscribeOptions(language="en")] * max(sizes)
        for n in sizes:
            single, batched = measure(engine, clips[:n], options[:n], args.repeats)
            rows.append((label, engine.device, n, n / single, n / batched, single / batched))
            print(f"{label:24s} {engine.device:5s} N={n:3d}  one-by-one {n / single:7.2f} clips/s"
                  f"  batched {n / batched:7.2f} clips/s  ratio {single / batched:5.2f}x",
                  flush=True)
        engine.unload()
    print("\n| engine | device | N | one-by-one clips/s | batched clips/s | batched / one-by-one |")
    print("|---|---|---|---|---|---|")
    for label, device, n, s, b, r in rows:
        print(f"| {label} | {device} | {n} | {s:.2f} | {b:.2f} | {r:.2f}x |")
    if args.plot:
        plot(rows, args.plot)


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == label]
        ax.plot([r[2] for r in mine], [r[5] for r in mine], "o-", label=f"{label} ({mine[0][1]})")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("requests in the batch (N)")
    ax.set_ylabel("throughput, batched / one by one")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
