"""Running a GPU script's CPU dry run as the GPU host would, and what it imported."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs the script, then writes the distributions whose modules it imported (not the
# standard library's) to the file named by the last argument.
_RUN = """
import atexit, importlib.metadata as m, json, runpy, sys
sys.argv, record = sys.argv[1:-1], sys.argv[-1]  # (argv[0] is '-c')
def _dists():
    found = m.packages_distributions()
    tops = {n.partition('.')[0] for n in list(sys.modules)} - set(sys.stdlib_module_names)
    with open(record, 'w') as f:
        json.dump(sorted({d for t in tops for d in found.get(t, [])}), f)
atexit.register(_dists)
sys.path.insert(0, sys.argv[0].rpartition('/')[0])
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def normal(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dry_run(script: str, tmp_path: Path) -> tuple[dict, set[str]]:
    """benchmarks/SCRIPT --cpu-dry-run: its JSON result, and the distributions it imported."""
    record = tmp_path / "imported.json"
    cmd = [sys.executable, "-c", _RUN, str(ROOT / "benchmarks" / script), "--cpu-dry-run"]
    out = subprocess.run([*cmd, str(record)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), {normal(d) for d in json.loads(record.read_text())}


def missing_on_gpu_host(imported: set[str]) -> set[str]:
    """What the GPU host would lack, given its own packages and the carried wheels."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gpu_wheels import HOST, WHEELS
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    ours = {"alexnet-pipeline", "pillow-simd"}  # the checkout itself; the host's own Pillow
    return imported - ours - {normal(d) for d in (*HOST, *WHEELS)}
