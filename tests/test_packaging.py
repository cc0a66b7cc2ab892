"""The install itself: pillow-simd is the PIL, torch is the pinned CPU build,
the packages import, imports point only down the stack, the CLI answers."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shards", "preprocessing", "training", "flows")
# Which project packages each package may import (the design's arrows), and
# which heavy third-party packages it must not.
ALLOWED = {
    "shards": set(),
    "preprocessing": {"shards"},
    "training": {"shards"},
    "flows": {"preprocessing", "training", "shards"},
}
FORBIDDEN_THIRD_PARTY = {
    "shards": {"torch", "prefect", "dask", "distributed"},
    "preprocessing": {"torch", "prefect"},
    "training": {"prefect"},
    "flows": set(),
}


def test_pil_is_pillow_simd():
    import PIL

    simd = md.version("pillow-simd")
    with pytest.raises(md.PackageNotFoundError):
        md.version("pillow")  # stock Pillow would own PIL/ instead
    assert PIL.__version__ in (simd, simd.split(".post")[0])
    owned = {str(f) for f in md.files("pillow-simd") or []}
    assert "PIL/__init__.py" in owned
    assert (
        Path(PIL.__file__).resolve()
        == Path(md.distribution("pillow-simd").locate_file("PIL/__init__.py")).resolve()
    )


def test_torch_is_the_pinned_build():
    import torch

    assert torch.__version__.split("+")[0] == "2.13.0"


@pytest.mark.parametrize("name", PACKAGES)
def test_packages_import(name):
    importlib.import_module(name)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _module_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports anywhere (functions and
    TYPE_CHECKING blocks included: a lazy import is still a dependency)."""
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts): p
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    }
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycle_between_modules():
    graph, done, path = _module_graph(), set(), []

    def visit(module: str) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert "training.checkpoint" in graph["training.figures"]  # the graph is really read


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_the_stack(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        used = _imports(path)
        upward = (used & set(PACKAGES)) - ALLOWED[package] - {package}
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)} (against the design)"
        heavy = used & FORBIDDEN_THIRD_PARTY[package]
        assert not heavy, f"{path.relative_to(ROOT)} imports {sorted(heavy)}"


def _alexnet(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("alexnet")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def _stages() -> dict[str, argparse.ArgumentParser]:
    from flows.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_cli_help_lists_every_stage():
    top = _alexnet("--help")
    assert top.returncode == 0, top.stderr
    assert "sample-data" in _stages()
    for name in _stages():
        assert name in top.stdout


def test_exports_format_choices_are_the_exporters():
    """The CLI lists export's formats by hand (importing training.export would import
    torch at start): the list must stay the exporter's."""
    from training.export import FORMATS

    (fmt,) = [a for a in _stages()["export"]._actions if a.dest == "format"]
    assert sorted(fmt.choices) == sorted(FORMATS)


def test_every_subcommand_help_shows_defaults():
    for name, parser in _stages().items():
        res = _alexnet(name, "--help")
        assert res.returncode == 0, res.stderr
        text = " ".join(res.stdout.split())  # argparse wraps lines
        options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
        assert options, name
        for action in options:
            said = f"(default: {action.default})" in text
            in_words = action.default is None and "(default: " in (action.help or "")
            # a --no-X flag says what happens without it (its "default: True" read as "off")
            negated = isinstance(action, argparse._StoreFalseAction) and "unless" in action.help
            assert said or in_words or negated or action.required, (name, action.dest)


def test_stage_options_are_generated_from_the_settings_dataclasses():
    """Each option of preprocess and sample-data is a settings field: its flag, default
    and help come from the field, and the parsed defaults rebuild the defaults."""
    from flows.cli import build_parser
    from preprocessing.image import ImageSettings
    from preprocessing.plan import PrepareSettings
    from preprocessing.sample_data import SampleSpec
    from shards.settings import from_options, option_fields

    parser = build_parser()
    args = parser.parse_args(["preprocess", "S", "O"])
    image = from_options(ImageSettings, args)
    assert from_options(PrepareSettings, args, image=image) == PrepareSettings()
    assert from_options(SampleSpec, parser.parse_args(["sample-data", "D"])) == SampleSpec()
    changed = parser.parse_args(["preprocess", "S", "O", "--shard-size", "7", "--no-draft"])
    assert (changed.shard_size, changed.draft) == (7, False)
    stages = _stages()
    for stage, classes in [
        ("preprocess", (PrepareSettings, ImageSettings)),
        ("sample-data", (SampleSpec,)),
    ]:
        actions = {a.dest: a for a in stages[stage]._actions}
        for cls in classes:
            for f in option_fields(cls):
                assert actions[f.name].help == f.metadata["help"], (stage, f.name)
                assert actions[f.name].default == f.default
    with pytest.raises(SystemExit):
        parser.parse_args(["preprocess", "S", "O", "--shard-size", "0"])  # minimum=1


def test_cli_start_and_the_training_config_do_not_import_torch_or_prefect():
    """`alexnet --help` stays fast: the parser lists presets from training.config, which
    (with the network's settings in training.architecture) is torch-free."""
    code = (
        "import sys, training.config, training.architecture, flows.cli as c; "
        "c.build_parser(); print(sorted({'torch', 'prefect'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_data_stages_never_load_torch(small_tree, tmp_path):
    """Not even through a dependency (webdataset imports torch when it can)."""
    root, _ = small_tree
    code = (
        "import sys\n"
        "from preprocessing.prepare import preprocess\n"
        "from preprocessing.stats import compute_stats\n"
        "from shards.reader import iter_samples, shard_paths\n"
        "if __name__ == '__main__':\n"
        f"    preprocess({str(root)!r}, {str(tmp_path / 'out')!r}, workers=1, progress=False)\n"
        f"    compute_stats({str(tmp_path / 'out')!r}, workers=1, from_pixels=True)\n"
        f"    n = sum(1 for _ in iter_samples(shard_paths({str(tmp_path / 'out')!r}, 'train')))\n"
        "    print(n, 'torch' in sys.modules, 'prefect' in sys.modules)\n"
    )
    script = tmp_path / "stages.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, torch_loaded, prefect_loaded = out.stdout.split()
    assert int(n) > 0 and torch_loaded == "False" and prefect_loaded == "False"


def test_cli_sample_data_writes_and_refuses_to_clobber(tmp_path):
    out = tmp_path / "tree"
    small = ["--classes", "2", "--train-per-class", "6", "--val-per-class", "1", "--quirks", "1"]
    res = _alexnet("sample-data", str(out), *small, "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert "2 classes, 12 train and 2 val images" in res.stdout
    assert len(list((out / "train").rglob("*.JPEG"))) == 12

    again = _alexnet("sample-data", str(out), *small)
    assert again.returncode == 0 and "nothing to do" in again.stdout

    other = _alexnet("sample-data", str(out), "--seed", "3")
    assert other.returncode == 2
    assert "not empty" in other.stderr and "Traceback" not in other.stderr
    assert len(list((out / "train").rglob("*.JPEG"))) == 12

    bad = _alexnet("sample-data", str(tmp_path / "x"), "--classes", "0")
    assert bad.returncode == 2 and "must be >= 1" in bad.stderr


def test_no_module_over_450_lines_and_no_function_over_60():
    """Issue 24: one concern per room. A module that grows past 450 lines, or a function
    past 60 (argument parsers aside: a list of options is long by nature), wants splitting."""
    import ast

    too_long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            if len(text.splitlines()) > 450:
                too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
                parser = isinstance(node, ast.FunctionDef) and node.name.startswith("add_")
                if isinstance(node, ast.FunctionDef) and size > 60 and not parser:
                    too_long.append(f"{path.relative_to(ROOT)}: {node.name}() {size} lines")
    assert not too_long, too_long


def test_no_import_fallbacks_in_the_packages():
    """Issue 24: a GPU host runs the same code as CI (from the wheel folder), so no module
    keeps a second path for a missing library (the optional `_sums` extension aside)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ExceptHandler) and node.type is not None:
                    names = ast.unparse(node.type)
                    if "ImportError" in names or "ModuleNotFoundError" in names:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert [f.partition(":")[0] for f in found] == ["shards/partials.py"], found


def test_the_gpu_wheel_folder_carries_what_the_host_lacks(tmp_path):
    """scripts/gpu_wheels.py downloads each carried package at the version installed here,
    for the host's Python 3.12; whatever those wheels need is on the host or carried too.
    (That the GPU scripts import nothing else: their dry runs, in test_model/test_train.)"""
    from packaging.requirements import Requirement

    from tests.gpu_host import normal

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gpu_wheels import HOST, WHEELS
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    there = {normal(d) for d in (*HOST, *WHEELS)}
    for name in WHEELS:
        for line in md.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"python_version": "3.12", "extra": ""}):
                assert normal(req.name) in there, f"{name} needs {req.name}"
    script = ROOT / "scripts" / "gpu_wheels.py"
    cmd = [sys.executable, str(script), "--dest", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = {normal(w.name.split("-")[0]): w.name.split("-")[1] for w in tmp_path.glob("*.whl")}
    assert got == {normal(n): md.version(n) for n in WHEELS}
    for wheel in tmp_path.glob("*.whl"):  # binary ones for the host's CPython 3.12
        tags = wheel.name.split("-")[2:]
        assert tags[0] in {"cp312", "py3", "py2.py3"}, wheel.name


def test_a_built_wheel_holds_every_module_and_the_report_template(tmp_path):
    """A non-editable install has what the checkout has: the subpackages (flows/cli,
    training/loader were missing from the wheel when the package list was written out by
    hand) and the report's Jinja2 template."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # a copy: no build/ folder left from an earlier build
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*cmd, str(src), "-w", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("*.whl")
    held = set(zipfile.ZipFile(wheel).namelist())
    ours = {
        str(p.relative_to(ROOT))
        for package in PACKAGES
        for p in (ROOT / package).rglob("*")
        if p.suffix in {".py", ".j2"} and "__pycache__" not in p.parts
    }
    assert ours and ours <= held, sorted(ours - held)
