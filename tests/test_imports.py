"""The package's shape: imports run one way (math -> capture -> models/data -> engine -> jobs -> cli, plots
drawn for the jobs, ofa beside them), no module imports another in a circle, and the light imports stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cka_probe"

# What each part may import from the package (besides its own modules and the shared leaf modules).
ALLOWED = {
    "math": set(),
    "capture": {"math"},
    "models": {"math", "capture"},
    "data": {"math"},
    "engine": {"math", "capture", "models", "data"},
    "jobs": {"math", "capture", "models", "data", "engine", "plots"},  # plots only to draw a result it is asked to
    "plots": {"math"},
    "ofa": {"math", "capture", "models", "data", "engine", "plots"},  # plots only to draw a run's CKA to its teacher
    "cli": {"math", "capture", "models", "data", "engine", "jobs", "plots", "ofa"},
}
LEAVES = {"errors", "_choices", "_config", "_files", "_version", "_device", "_lazy"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every cka_probe module ``path`` imports, at the top or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("cka_probe"):
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cka_probe"))
    return {m for m in found if m != name}


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_imports_run_one_way():
    wrong = []
    for module, targets in _graph().items():
        part = _part(module)
        if part not in ALLOWED:
            continue
        for target in targets:
            other = _part(target)
            if other in (part, "") or other in LEAVES or other in ALLOWED[part]:
                continue
            wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


# Inside math, each module imports only those before it: the kernels, the checks every estimator shares, the
# all-pairs engine, the pairwise estimators (the engine on one pair), then the streaming and resampling forms.
MATH_ORDER = ["kernels", "checks", "engine", "estimators", "streaming", "resampling"]


def test_math_modules_import_in_their_order():
    graph = _graph()
    assert {m.rpartition(".")[2] for m in graph if m.startswith("cka_probe.math.")} == set(MATH_ORDER)
    wrong = []
    for position, name in enumerate(MATH_ORDER):
        for target in graph[f"cka_probe.math.{name}"]:
            other = target.rpartition(".")[2]
            if target.startswith("cka_probe.math.") and MATH_ORDER.index(other) >= position:
                wrong.append(f"math.{name} imports math.{other}")
    assert not wrong, wrong


def test_no_module_imports_another_in_a_circle():
    graph = {m: {t for t in ts if not t.endswith("__init__")} for m, ts in _graph().items()}
    # a package's __init__ re-exports its modules; that is not a circle of the code
    packages = {m for m in graph if (ROOT.joinpath(*m.split(".")) / "__init__.py").exists()}
    edges = {m: {t for t in ts if t not in packages} for m, ts in graph.items() if m not in packages}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, path + [node]):
                return True
        state[node] = 2
        return False

    for node in edges:
        if state.get(node) is None and visit(node, []):
            break
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("module", ["cka_probe", "cka_probe.math", "cka_probe.cli.main"])
def test_light_imports_do_not_load_timm_pandas_or_plotting(module):
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('timm', 'pandas', 'pyarrow', 'torchvision', 'matplotlib', 'seaborn') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"import {module} loads {loaded}"


def _registered_after(statement: str) -> str:
    code = (
        f"{statement}; import timm; "
        "print([timm.create_model(name, num_classes=10).num_features if timm.is_model(name) else None "
        "for name in ('swin_nano_patch4_window7_224', 'swin_pico_patch4_window7_224')])"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("statement", ["import cka_probe.models", "from cka_probe.ofa import train"])
def test_swin_nano_and_pico_are_registered_by_the_imports_the_docs_name(statement):
    # B.2: embedding width 64 (Nano) / 48 (Pico), doubled at each of the three patch mergings
    assert _registered_after(statement) == str([64 * 8, 48 * 8])


def test_the_light_package_root_alone_registers_no_model():
    # The docs say so: import cka_probe loads neither timm nor the models package; import cka_probe.models does
    assert _registered_after("import cka_probe") == "[None, None]"
