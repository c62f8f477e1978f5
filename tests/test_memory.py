"""Unloading a model returns its memory to the system, and cycles do not grow the process.

Runs in a fresh interpreter so that nothing else the test session holds moves the RSS.
"""
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from serve_app.engines.base import TranscribeOptions
    from serve_app.engines.whisper import WhisperEngine
    from serve_app.memory import release_memory, rss_bytes
    from serve_app.tiny_models import RANDOM_WHISPER_OPTIONS, build_whisper

    path = build_whisper(sys.argv[1] + "/whisper-tiny.pt", dims="tiny", seed=1)
    audio = (0.1 * np.sin(np.arange(16000 * 5) / 7.0)).astype(np.float32)
    engine = WhisperEngine(str(path), device="cpu", sample_len=8, **RANDOM_WHISPER_OPTIONS)
    mb = lambda: rss_bytes() / 2**20
    # one warm-up cycle: whisper's tokenizer and mel filters are cached for the process's life
    engine.load()
    engine.transcribe_batch([audio], [TranscribeOptions(language="en")])
    engine.unload()
    before = mb()
    engine.load()
    loaded = mb()
    engine.transcribe_batch([audio], [TranscribeOptions(language="en")])
    engine.unload()
    after_first = mb()
    for _ in range(10):
        engine.load()
        engine.transcribe_batch([audio], [TranscribeOptions(language="en")])
        engine.unload()
    print(json.dumps(dict(before=before, loaded=loaded, after_first=after_first, after_ten=mb())))
""")


def test_unload_returns_rss_and_cycles_do_not_grow(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, timeout=300, check=True)
    mb = json.loads(out.stdout.strip().splitlines()[-1])
    model_mb = mb["loaded"] - mb["before"]
    assert model_mb > 100, mb  # the 39M-parameter model really was resident
    # back near the level before the load
    assert mb["after_first"] - mb["before"] < 0.15 * model_mb, mb
    # ten more cycles: no growth
    assert mb["after_ten"] - mb["after_first"] < 25, mb
