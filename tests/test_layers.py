"""The import direction between the project's layers (docs/architecture.md, "Layers").

storage < pipeline < model < flows < pipeline.cli: a module may import its own layer and
the ones below it, never one above. Every ``import``/``from ... import`` in the source is
checked, including those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom first. ``pipeline.cli`` is the ``mktn`` command: the top layer, above flows.
LAYERS = ("storage", "pipeline", "model", "flows", "pipeline.cli")
PACKAGES = ("storage", "pipeline", "model", "flows")

# (importing module, imported module) pairs allowed to go upwards, each with its reason.
# Keep this short: an entry is a debt, not a rule.
ALLOWED: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to, or None outside the project."""
    if module == "pipeline.cli" or module.startswith("pipeline.cli."):
        return "pipeline.cli"
    top = module.split(".")[0]
    return top if top in LAYERS else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, dotted name)`` for every import in ``path``; ``from a import b`` gives ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found.extend((node.lineno, f"{name}.{alias.name}") for alias in node.names)
    return found


def upward_imports() -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    problems: dict[tuple[Path, int], str] = {}  # one line per import statement
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = module_name(path)
            own = layer_of(module)
            assert own is not None
            for line, name in imported_modules(path, module):
                other = layer_of(name)
                if other is None or rank[other] <= rank[own]:
                    continue
                if (module, name) in ALLOWED:
                    continue
                rel = path.relative_to(ROOT)
                problems.setdefault((rel, line), f"{rel}:{line}: {own} layer imports {name} ({other} layer)")
    return sorted(problems.values())


def test_lower_layers_never_import_higher_ones():
    problems = upward_imports()
    assert not problems, "imports against the layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(problems)


def test_allow_list_entries_are_still_needed():
    for (module, name), reason in ALLOWED.items():
        assert reason, f"{module} -> {name} needs a reason"
        path = ROOT / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        names = {n for _, n in imported_modules(path, module)}
        assert name in names, f"allow-list entry {module} -> {name} no longer matches an import: remove it"


@pytest.mark.parametrize(
    ("module", "layer"),
    [("storage.features", "storage"), ("pipeline.extract", "pipeline"), ("pipeline.cli.train", "pipeline.cli"),
     ("pipeline.cli", "pipeline.cli"), ("model.loader", "model"), ("flows.train", "flows"), ("numpy", None)],
)
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    src = tmp_path / "pkg" / "mod.py"
    src.parent.mkdir()
    src.write_text("def f():\n    import flows.train\n    from .sub import x\n    from model import loader\n")
    names = [n for _, n in imported_modules(src, "pkg.mod")]
    assert names == ["flows.train", "pkg.sub", "pkg.sub.x", "model", "model.loader"]
