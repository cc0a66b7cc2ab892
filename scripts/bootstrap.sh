#!/usr/bin/env bash
# Set up .venv/ from nothing on a Debian-like machine: the system headers that
# pillow-simd needs to compile, the virtual environment, pillow-simd built for
# this CPU, then the project itself (editable) with its dev extra.
#
# Idempotent: `make` calls it only when pyproject.toml or this script changed.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

say() { printf '[bootstrap] %s\n' "$*"; }

# 1. System packages for compiling pillow-simd and our C extensions
#    (shards/_sums.c): a C compiler, Python's headers and the
#    JPEG, zlib and PNG headers; and Chromium for one test. Installed only when
#    missing.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
py_include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[ -e "$py_include/Python.h" ] || missing+=(python3-dev)
[ -e /usr/include/jpeglib.h ] || missing+=(libjpeg62-turbo-dev)
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
[ -e /usr/include/png.h ] || missing+=(libpng-dev)
# Debian's Chromium: the test that renders a run's report.html in a headless browser.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing system packages: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
            say "need root to run: apt-get install -y ${missing[*]}" >&2; exit 1
        fi
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check --quiet)
# pip, minus the warnings about find-links folders that this machine's pip
# configuration names but does not have (they drown the real messages).
pip_() { "${PIP[@]}" "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; }

# 3. pillow-simd, at the version pyproject.toml pins, compiled for this CPU.
#    pip's wheel cache ignores CC, so a cached SSE4 wheel would be reused
#    silently: build with --no-cache-dir. AVX2 only where the CPU has it
#    (an -mavx2 build dies with SIGILL elsewhere).
spec=$("$PY" - <<'PYEOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(d for d in deps if d.startswith("pillow-simd")))
PYEOF
)
want=${spec#*==}
have=$("$PY" -c 'import importlib.metadata as m; print(m.version("pillow-simd"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
    simd_cc="cc"
    if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then simd_cc="cc -mavx2"; fi
    say "building $spec from source with CC='$simd_cc' (about 30 s)"
    pip_ uninstall -y pillow >/dev/null || true
    CC="$simd_cc" pip_ install --no-cache-dir --no-binary pillow-simd --force-reinstall --no-deps "$spec"
fi

# 4. The project and its dependencies. pillow-simd is already satisfied, so pip
#    leaves it alone.
say "installing the project (editable) with its dev extra"
pip_ install -e ".[dev]"

# 5. Nothing may have put stock Pillow over pillow-simd.
"$PY" - <<'PYEOF'
import importlib.metadata as m
import sys

try:
    m.version("pillow")
except m.PackageNotFoundError:
    pass
else:
    sys.exit("[bootstrap] stock Pillow is installed over pillow-simd; run: "
             ".venv/bin/pip uninstall -y pillow && "
             ".venv/bin/pip install --force-reinstall --no-deps pillow-simd")
import PIL

simd = m.version("pillow-simd")
if PIL.__version__ != simd.split(".post")[0] and PIL.__version__ != simd:
    sys.exit(f"[bootstrap] PIL {PIL.__version__} is not pillow-simd {simd}")
print(f"[bootstrap] ok: PIL {PIL.__version__} from pillow-simd {simd}")
PYEOF
