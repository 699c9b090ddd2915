"""The package's imports run one way, from the bottom layer up; the layer order is written here, once.

Every ``import`` of a nas_meta module is read from the source (those inside functions too): a module may
import modules of lower layers, and modules of its own package (``search/*``, ``learners/*``), nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nas_meta"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "errors"),                 # leaves
    ("resources",),                         # the shipped study files
    ("config", "runtime", "objectives"),    # objectives: a task's loss and score, read from its targets
    ("data", "architectures"),
    ("episodes", "task_batched"),
    ("functional", "cuda_graphs", "sinusoid"),  # inner-loop math; a step from a CUDA graph; the sinusoid family
    ("learners",),                          # strategies over functional
    ("training",),                          # one run: workspace, meta-train generator, evaluate, typed records
    ("checkpoint", "storage", "bench"),     # persisting learners; opening storages; timing steps
    ("inference", "studies"),               # using a saved learner; reading search studies
    ("search",),                            # space walk, objective, study set-up, workers
    ("report",),                            # views
    ("export", "compare", "dashboard"),
    ("finalize",),                          # retrain a study's best at full budget, then compare
    ("api",),                               # the facade
    ("__init__",),                          # the package: re-exports the facade
    ("progress",),                          # the command line's progress bars
    ("cli",),                               # parses, calls one function, prints
    ("__main__",),
)
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def unit(path: Path) -> str:
    """The layer unit of a source file: its top-level module or package under nas_meta/."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_units(source: str, path: Path) -> list[tuple[int, str]]:
    """``(line, unit)`` for every nas_meta module the source imports, at any depth of the file."""
    package_parts = ["nas_meta", *path.relative_to(PACKAGE).parts[:-1]]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package_parts[: len(package_parts) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "nas_meta":
                found.append((node.lineno, parts[1] if len(parts) > 1 else "__init__"))
    return found


def upward_imports(path: Path, source: str) -> list[str]:
    me = unit(path)
    problems = []
    for line, target in imported_units(source, path):
        if target == me:
            continue
        if target not in LAYER_OF:
            problems.append(f"{path.name}:{line} imports nas_meta.{target}, which has no layer in LAYERS")
        elif LAYER_OF[target] >= LAYER_OF[me]:
            problems.append(f"{path.relative_to(PACKAGE)}:{line}: {me} (layer {LAYER_OF[me]}) imports {target} "
                            f"(layer {LAYER_OF[target]})")
    return problems


def test_every_module_has_a_layer() -> None:
    units = {unit(p) for p in PACKAGE.rglob("*.py")}
    assert units == set(LAYER_OF), f"add or remove in LAYERS: {sorted(units ^ set(LAYER_OF))}"


def test_imports_go_one_way() -> None:
    problems = [p for path in sorted(PACKAGE.rglob("*.py")) for p in upward_imports(path, path.read_text())]
    assert problems == []


def expected(target: str, line: int = 1) -> list[str]:
    return [f"learners/base.py:{line}: learners (layer {LAYER_OF['learners']}) imports {target} "
            f"(layer {LAYER_OF[target]})"]


@pytest.mark.parametrize("source, problems", [
    ("def f():\n    from ..api import load_learner\n", expected("api", 2)),
    ("from nas_meta.search import search\n", expected("search")),
    ("from .. import training\n", expected("training")),
    ("from . import maml\nfrom ..functional import Params\nimport torch\n", []),
])
def test_the_check_sees_upward_imports_at_any_depth(source: str, problems: list[str]) -> None:
    assert upward_imports(PACKAGE / "learners" / "base.py", source) == problems


def test_same_layer_modules_do_not_import_each_other() -> None:
    layer = LAYER_OF["checkpoint"]
    assert LAYER_OF["storage"] == layer
    assert upward_imports(PACKAGE / "checkpoint.py", "from .storage import open_storage\n") == [
        f"checkpoint.py:1: checkpoint (layer {layer}) imports storage (layer {layer})"]
