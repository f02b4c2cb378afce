"""Native code must run on the CPU it lands on, not only on the machine that built it.

senko's PyPI wheel compiled its fbank extractor with ``-march=native`` on an AVX-512
machine; on a Zen 1 EPYC without AVX-512 the first diarization died with "Illegal
instruction" and took the whole test session (or a Serve replica) with it. Setup now
builds senko from its source release for x86-64-v2 (``cluster/senko_wheel.py``), and
the Diarizer refuses to load a build that cannot run here (``app/speech/native_check.py``).
The probe runs in a child process, so a bad build fails this test instead of the
session; this file sorts before the diarization tests.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from app.speech import native_check
from cluster import senko_wheel

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_fbank_extractor_runs_on_this_cpu():
    """The Diarizer asks the same question before it loads senko."""
    run = subprocess.run(
        [sys.executable, "-c", native_check.PROBE], capture_output=True, text=True, timeout=120
    )
    assert run.returncode != -signal.SIGILL, native_check.WRONG_BUILD
    assert run.returncode == 0, run.stderr[-2000:]
    dim, frames, finite = run.stdout.split()
    assert int(dim) == 80 and 140 <= int(frames) <= 160 and finite == "True"
    native_check.check_fbank_extractor()  # and the load-time check agrees


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


def test_a_build_this_cpu_cannot_run_is_refused_with_what_to_do(monkeypatch):
    """A child that dies of SIGILL, as PyPI's wheel does on a CPU without AVX-512 (the
    CPU is the boundary faked here: which one runs the suite is not ours to pick)."""
    monkeypatch.setattr(native_check, "_checked", [])
    monkeypatch.setattr(
        native_check, "PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"
    )
    try:
        native_check.check_fbank_extractor()
    except native_check.UnsupportedCPUError as exc:
        assert "cluster/senko_wheel.py" in str(exc) and "AVX-512" in str(exc)
    else:
        raise AssertionError("a build that dies of SIGILL must be refused")
