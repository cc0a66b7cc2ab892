"""The wheel folder that lets a GPU host run the project's code as CI runs it.

    .venv/bin/python scripts/gpu_wheels.py [--dest .whl] [--python-version 3.12]

A GPU host (see docs/gpu.md) has its own python3 with torch, NumPy, Pillow and
a few more (HOST), but not the rest of what `training`, `shards` and the GPU
scripts import (WHEELS). This downloads each of WHEELS at the version
installed here, so that the host runs what CI tests, as binary wheels for the
host's Python, without their dependencies: those are in HOST or in WHEELS
(tests/test_gpu_wheels.py checks both lists against what the GPU scripts'
dry runs import). A few MiB in all. On the host, from the repository root:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=.:/tmp/site python3 benchmarks/gpu_train_check.py
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from pathlib import Path

# Distributions the GPU host's python3 already has, as its image listed them
# (2026-11-17), that our code or our wheels import.
HOST = frozenset(
    {
        "torch",
        "numpy",
        "pillow",
        "rich",
        "markdown-it-py",
        "mdurl",
        "pygments",
        "protobuf",
        "packaging",
        "pyyaml",
        "jinja2",
        "markupsafe",
        "psutil",
        "colorama",
        "typing-extensions",
        "filelock",
        "fsspec",
        "sympy",
        "mpmath",
        "networkx",
        "triton",
        "setuptools",
    }
)

# What it lacks, carried as wheels at the versions installed here.
WHEELS = ("simplejpeg", "isal", "tensorboardx", "webdataset", "braceexpand")

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def pinned() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dest", default=".whl", help="the folder to fill (default: .whl)")
    ap.add_argument("--python-version", default="3.12", help="the host's Python (default: 3.12)")
    args = ap.parse_args()
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    cmd += ["--only-binary", ":all:", "--implementation", "cp"]
    cmd += ["--python-version", args.python_version, "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    done = subprocess.run([*cmd, *pinned()], capture_output=True, text=True)
    noise = "is ignored: it is neither a file nor a directory"  # this machine's pip config
    sys.stderr.write("".join(line for line in done.stderr.splitlines(True) if noise not in line))
    if done.returncode:
        sys.exit(done.returncode)
    wheels = sorted(dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB in {dest}/:")
    for w in wheels:
        print(f"  {w.name}")


if __name__ == "__main__":
    main()
