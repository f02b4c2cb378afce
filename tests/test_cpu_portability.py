"""Native code must run on the CPU it lands on, not only on the machine that built it.

senko's PyPI wheel compiled its fbank extractor with ``-march=native`` on an AVX-512
machine; on a Zen 1 EPYC without AVX-512 the first diarization died with "Illegal
instruction" and took the whole test session (or a Serve replica) with it. Setup now
builds senko from its source release for x86-64-v2 (``cluster/senko_wheel.py``). The
probe runs in a child process, so a bad build fails this test instead of the session;
this file sorts before the diarization tests.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from cluster import senko_wheel

ROOT = Path(__file__).resolve().parent.parent

# Loads the installed extractor with ctypes (no torch import) and runs it on 1.6 s of
# noise, one 1.5 s window: 80 mel bins a frame, about 150 frames.
PROBE = r"""
import ctypes, importlib.util, pathlib, numpy as np
folder = pathlib.Path(importlib.util.find_spec("senko").submodule_search_locations[0])
lib = ctypes.CDLL(str(folder / "libfbank_extractor.so"))
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


def test_the_installed_fbank_extractor_runs_on_this_cpu():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert run.returncode != -signal.SIGILL, (
        "senko's fbank extractor uses instructions this CPU lacks: it is PyPI's "
        "-march=native wheel; `make clean test` builds it from source "
        "(cluster/senko_wheel.py)"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    dim, frames, finite = run.stdout.split()
    assert int(dim) == 80 and 140 <= int(frames) <= 160 and finite == "True"


def test_the_build_replaces_native_flags_with_a_portable_baseline(tmp_path):
    cmake = tmp_path / senko_wheel.CMAKE_FILE
    cmake.parent.mkdir(parents=True)
    cmake.write_text('set(FLAGS "${FLAGS} -O3 -march=native -ffast-math")\n')
    senko_wheel.patch_cmake(tmp_path, senko_wheel.portable_flags("x86_64"))
    assert (
        cmake.read_text()
        == 'set(FLAGS "${FLAGS} -O3 -march=x86-64-v2 -mtune=generic -ffast-math")\n'
    )
    assert senko_wheel.portable_flags("aarch64") == ""


def test_a_source_release_without_native_flags_is_refused(tmp_path):
    cmake = tmp_path / senko_wheel.CMAKE_FILE
    cmake.parent.mkdir(parents=True)
    cmake.write_text('set(FLAGS "-O3")\n')
    try:
        senko_wheel.patch_cmake(tmp_path, "-march=x86-64-v2")
    except SystemExit as exc:
        assert "no longer says -march=native" in str(exc)
    else:
        raise AssertionError("a changed CMakeLists must be checked by hand")


def test_the_version_built_is_the_one_pyproject_pins():
    pin = senko_wheel.pinned_version(ROOT / "pyproject.toml")
    assert pin == "0.2.2"
    import importlib.metadata

    assert importlib.metadata.version("senko") == pin
