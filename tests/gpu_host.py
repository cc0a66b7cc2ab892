"""Running a GPU script's CPU dry run as the GPU host would, and what it imported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs the script as on the GPU host: a distribution that the host lacks and is not
# carried cannot be imported (so a third-party package's optional import, such as
# tensorboardX's `import boto3` for s3:// logdirs, goes without, as it would there, and
# an import of ours that needs one fails). Then writes the distributions whose modules it
# imported (not the standard library's) to the file named by the last argument.
_RUN = """
import atexit, importlib.metadata as m, json, os, re, runpy, sys
sys.argv, record = sys.argv[1:-1], sys.argv[-1]  # (argv[0] is '-c')
allowed = set(json.loads(os.environ['GPU_HOST_DISTRIBUTIONS']))
for top, dists in m.packages_distributions().items():
    names = {re.sub(r'[-_.]+', '-', d).lower() for d in dists}
    if top not in sys.modules and top not in sys.stdlib_module_names and not names & allowed:
        sys.modules[top] = None  # `import top` raises ImportError, as on the host
def _dists():
    found = m.packages_distributions()
    loaded = [n for n, mod in list(sys.modules.items()) if mod is not None]  # not blocked
    tops = {n.partition('.')[0] for n in loaded} - set(sys.stdlib_module_names)
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
    env = {**os.environ, "GPU_HOST_DISTRIBUTIONS": json.dumps(sorted(on_gpu_host()))}
    out = subprocess.run([*cmd, str(record)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), {normal(d) for d in json.loads(record.read_text())}


def on_gpu_host() -> set[str]:
    """The distributions a GPU host has: its own packages, the carried wheels, the checkout
    itself, and Pillow (the host's stock one stands in for pillow-simd)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gpu_wheels import HOST, WHEELS
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return {normal(d) for d in (*HOST, *WHEELS, "alexnet-pipeline", "pillow-simd")}


def missing_on_gpu_host(imported: set[str]) -> set[str]:
    """What the GPU host would lack, given its own packages and the carried wheels."""
    return imported - on_gpu_host()
