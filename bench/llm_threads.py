"""llama.cpp generation threads: one summary-sized call at 1 thread and at every CPU.

``AIPP_LLM_THREADS=0`` keeps llama-cpp-python's default: every CPU reads the prompt,
half of them generate (it assumes SMT), which on a 2-core VM is one thread. This
measures both counts on the same prompt, alone and while Whisper transcribes in another
process (what a one-machine service does when a second upload arrives).

    .venv/bin/python -m bench.llm_threads [--rounds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

from app.core.model_assets import resolve_llm_model, resolve_stt_model
from app.core.settings import Settings
from app.llm.engines import LlamaCppEngine

REPO = Path(__file__).resolve().parent.parent
AUDIO = REPO / "bench" / "data" / "ami_remote" / "mixture.flac"
PROMPT = "Summarize this meeting in three sentences, then list two key points.\n\n" + " ".join(
    "The remote control needs a simple menu on an LCD display, because people find "
    "too many buttons complicated, as on old mobile phones. The design team will be "
    "asked about the display by Friday, and the case will be yellow plastic."
    for _ in range(12)
)


def _transcribe_forever(stop: mp.Event) -> None:  # type: ignore[valid-type]
    from app.speech.stt import SpeechToText

    resolved = resolve_stt_model("bundled:tiny.en", Settings().cache_dir)
    stt = SpeechToText(resolved.path, resolved.name)
    audio = AUDIO.read_bytes()
    while not stop.is_set():
        stt.transcribe_bytes(audio)


def _one_call(engine: LlamaCppEngine) -> tuple[float, int]:
    ask = [{"role": "user", "content": PROMPT}]
    started = time.perf_counter()
    out = engine.generate(ask, max_tokens=160, temperature=0.0)
    return time.perf_counter() - started, engine.count_tokens(out.text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = Settings()
    model = resolve_llm_model("llama_cpp", settings.llm_model, settings.cache_dir)
    counts = sorted({1, os.cpu_count() or 1})
    engines = {n: LlamaCppEngine(model, context_tokens=2048, threads=n) for n in counts}
    print(f"cpus={os.cpu_count()} prompt_tokens=", end="")
    print(engines[counts[0]].count_tokens(PROMPT))
    for load in ("alone", "beside Whisper"):
        stop = mp.get_context("spawn").Event()
        worker = None
        if load != "alone":
            worker = mp.get_context("spawn").Process(target=_transcribe_forever, args=(stop,))
            worker.start()
            time.sleep(8)  # the model loaded and transcribing
        for n in counts:
            runs = [_one_call(engines[n]) for _ in range(args.rounds)]
            best = min(s for s, _ in runs)
            print(f"{load:15s} threads={n}: {best:6.1f} s ({runs[0][1]} tokens out)", flush=True)
        if worker is not None:
            stop.set()
            worker.join(timeout=120)


if __name__ == "__main__":
    main()
