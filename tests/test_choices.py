"""Every choice list lives in ``cka_probe/_choices.py``: no other module spells one out, and messages that list
choices are built from the list (so a choice the pattern takes, such as ``mps``, is named)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cka_probe import _choices

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cka_probe"


def _choice_lists() -> dict[str, frozenset]:
    """Every tuple of two or more strings that ``_choices`` defines, by name."""
    return {
        name: frozenset(value)
        for name, value in vars(_choices).items()
        if isinstance(value, tuple) and len(value) >= 2 and all(isinstance(v, str) for v in value)
    }


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments (``POOLS = ("mean", "max", FLATTEN)`` spells a list too)."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            names.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return names


def _literal_groups(source: str) -> list[tuple[int, list[str]]]:
    """(line, strings) of every tuple, list or set of two or more strings in ``source``, and of every
    ``Literal[...]`` of two or more strings."""
    tree = ast.parse(source)
    constants = _string_constants(tree)

    def strings(elements) -> list[str] | None:
        values = []
        for element in elements:
            if isinstance(element, ast.Constant) and isinstance(element.value, str):
                values.append(element.value)
            elif isinstance(element, ast.Name) and element.id in constants:
                values.append(constants[element.id])
            else:
                return None
        return values if len(values) >= 2 else None

    groups = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            found = strings(node.elts)
        elif (
            isinstance(node, ast.Subscript) and getattr(node.value, "id", getattr(node.value, "attr", "")) == "Literal"
        ):
            found = strings(node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice])
        else:
            continue
        if found is not None:
            groups.append((node.lineno, found))
    return groups


def _copies(source: str) -> list[str]:
    """Each place in ``source`` that spells out a choice list of ``_choices`` (the same strings, any order), or a
    choice pattern (two choices joined by ``|``, as a regular expression names them)."""
    lists = _choice_lists()
    found = [
        f"line {line}: {name}"
        for line, values in _literal_groups(source)
        for name, choices in lists.items()
        if frozenset(values) == choices
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "|" in node.value:
            alternatives = set(re.split(r"[|()^$]", node.value))
            found += [
                f"line {node.lineno}: pattern of {name}"
                for name, choices in lists.items()
                if len(alternatives & choices) >= 2
            ]
    return sorted(set(found))


def test_the_walk_finds_a_spelled_out_list_a_literal_and_a_pattern():
    source = (
        'FLATTEN = "flatten"\n'
        'POOLS = ("mean", "max", FLATTEN)\n'
        'Family = Literal["cnn", "vit", "mlp", "hybrid", "unknown"]\n'
        'opt = click.Choice(["ray", "local"])\n'
        'PATTERN = re.compile(r"^(auto|cpu|cuda(:\\d+)?)$")\n'
        'OTHER = ("mean", "flatten")\n'
    )
    found = _copies(source)
    assert "line 2: POOLS" in found
    assert "line 3: FAMILIES" in found
    assert "line 4: EXECUTORS" in found
    assert "line 5: pattern of DEVICES" in found
    assert not [f for f in found if f.startswith("line 6")]


def test_no_module_but_choices_spells_out_a_choice_list():
    copies = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_choices.py" and path.parent == PACKAGE:
            continue
        copies += [f"{path.relative_to(ROOT)} {where}" for where in _copies(path.read_text())]
    assert not copies, "import these from cka_probe._choices: " + "; ".join(copies)


def test_the_device_pattern_takes_every_device_name_and_nothing_else():
    for name in ("auto", "cpu", "mps", "cuda", "cuda:0", "cuda:12"):
        assert _choices.DEVICE_PATTERN.match(name), name
    for name in ("gpu", "cuda:", "cuda:x", "CPU", "cpu ", "mps:cuda"):
        assert not _choices.DEVICE_PATTERN.match(name), name


def test_one_of_writes_the_choices_as_a_message_does():
    assert _choices.one_of(("a", "b", "c")) == "a, b or c"
    assert _choices.one_of(("a", "b"), last="and") == "a and b"
    assert _choices.one_of(("a",)) == "a"


def test_choices_imports_only_the_standard_library():
    code = "import sys; import cka_probe._choices; print(sorted(m for m in ('torch', 'timm', 'click', 'pydantic', 'numpy') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_literal_types_and_tuples_agree():
    """Each tuple is its ``Literal``'s arguments, so the schema and the checks take the same choices."""
    from typing import get_args

    pairs = {
        "FAMILIES": _choices.Family,
        "SUMMARY_SCORES": _choices.SummaryScore,
        "EXECUTORS": _choices.Executor,
        "TRAIN_INTERPOLATIONS": _choices.TrainInterpolation,
        "MODEL_WEIGHTS": _choices.ModelWeights,
    }
    for name, literal in pairs.items():
        assert getattr(_choices, name) == get_args(literal), name
    assert set(_choices.TRAIN_INTERPOLATIONS) == set(_choices.INTERPOLATIONS) | {"random"}
    assert set(_choices.MODEL_WEIGHTS) == set(_choices.WEIGHTS) | {"checkpoint"}
    assert set(_choices.INTERVAL_SCORES) < set(_choices.SUMMARY_SCORES)


@pytest.mark.parametrize(
    "module, attribute, name",
    [
        ("cka_probe.capture.pooling", "POOLS", "POOLS"),
        ("cka_probe.capture.pooling", "TOKENS", "TOKENS"),
        ("cka_probe.math.checks", "PRECISIONS", "PRECISIONS"),
        ("cka_probe.models._registry", "FAMILIES", "FAMILIES"),
        ("cka_probe.jobs.zoo", "SUMMARY_SCORES", "SUMMARY_SCORES"),
        ("cka_probe.jobs.zoo", "INTERVAL_SCORES", "INTERVAL_SCORES"),
        ("cka_probe.engine.executors", "EXECUTORS", "EXECUTORS"),
        ("cka_probe.models._load", "MODEL_WEIGHTS", "MODEL_WEIGHTS"),
        ("cka_probe.ofa.taps", "STAGES", "STAGES"),
        ("cka_probe.ofa.branches", "MODEL_KINDS", "MODEL_KINDS"),
        ("cka_probe.data._sources", "SOURCES", "PROBE_SOURCES"),
        ("cka_probe.data._folders", "IMAGENETTE_SIZES", "IMAGENETTE_SIZES"),
        ("cka_probe.ofa.config", "EVAL_PREPROCESSING", "EVAL_PREPROCESSING"),
        ("cka_probe.ofa.config", "DIST_BN", "DIST_BN"),
    ],
)
def test_public_names_elsewhere_are_the_choices_objects(module, attribute, name):
    import importlib

    assert getattr(importlib.import_module(module), attribute) is getattr(_choices, name)


def test_the_score_tables_cover_the_summary_scores():
    from cka_probe.jobs import zoo

    assert set(zoo.SCORE_FUNCTIONS) == set(_choices.INTERVAL_SCORES)
    assert set(zoo.SCORE_RANGES) == set(_choices.SUMMARY_SCORES)


def test_device_messages_name_every_device_the_pattern_takes():
    from click.testing import CliRunner

    from cka_probe._config import DeviceName, Section
    from cka_probe.cli.main import main

    result = CliRunner().invoke(main, ["compare", "test_vit", "test_vit", "--device", "gpu"])
    assert result.exit_code == 2
    assert "auto, cpu, mps, cuda or cuda:N" in result.output

    class Job(Section):
        device: DeviceName = "auto"

    with pytest.raises(ValueError, match=re.escape("auto, cpu, mps, cuda or cuda:N")):
        Job(device="gpu")


def test_resolve_device_names_mps_among_the_devices():
    from cka_probe._device import resolve_device
    from cka_probe.errors import DeviceError

    with pytest.raises(DeviceError, match=r"^unknown device 'gpu'; use --device auto, cpu, mps, cuda or cuda:N$"):
        resolve_device("gpu")


@pytest.mark.parametrize(
    "command, option, choices",
    [
        ("compare", "--checkpoint-a", _choices.CHECKPOINT_SUFFIXES),
        ("compare", "--format", _choices.FORMATS),
        ("identify", "--pool", _choices.POOLS),
        ("identify", "--format", _choices.FORMATS),
        ("figure", "--labels", _choices.LABELS),
        ("zoo", "--labels", _choices.LABELS),
    ],
)
def test_help_that_lists_choices_lists_every_one(command, option, choices):
    from click.testing import CliRunner

    from cka_probe.cli.main import main

    result = CliRunner().invoke(main, [command, "--help"], terminal_width=1000)
    assert result.exit_code == 0
    (line,) = [line for line in result.output.splitlines() if line.strip().startswith(option + " ")]
    assert all(re.search(rf"(?<![\w.]){re.escape(choice)}(?![\w])", line) for choice in choices), line


def test_modules_import_choice_lists_from_choices_not_from_a_module_that_imported_them():
    """A package's ``__init__`` may re-export one (its public names); every other module imports it from
    ``_choices``. A same-named different object (``cka_probe.data.Pool``, a class) is not a choice list."""
    import importlib

    names = set(_choices.__all__)
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or (node.module or "").endswith("_choices"):
                continue
            for alias in (a for a in node.names if a.name in names):
                source = importlib.import_module(
                    "." * node.level + (node.module or ""), package=module.rpartition(".")[0]
                )
                if getattr(source, alias.name) is getattr(_choices, alias.name):
                    wrong.append(f"{module} imports {alias.name} from {source.__name__}")
    assert not wrong, wrong
