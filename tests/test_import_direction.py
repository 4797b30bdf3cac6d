"""Imports point one way: the plugin and the command line -> workflows -> the core
packages (engine, models, data, io, pseudolabel) -> config, presets and errors (and the
fork-kill helper of `testing`, which imports nothing of the package)."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_numsnet

PACKAGE = Path(napari_numsnet.__file__).parent

#: Rank of each top-level module or package of napari_numsnet; a module may import
#: from its own rank and below, never from a higher rank.
RANKS = {
    "config": 0,
    "presets": 0,
    "errors": 0,
    "testing": 0,
    "io": 1,
    "models": 1,
    "data": 1,
    "pseudolabel": 1,
    "engine": 2,
    "workfolder": 3,
    "workspace": 3,
    "workflows": 3,
    "pipeline": 3,
    "commands": 4,
    "options": 4,
    "cli": 4,
    "_napari": 4,
}


def top_level(module: str) -> str:
    return module.split(".")[0]


def imports_of(path: Path) -> set[str]:
    """Top-level napari_numsnet names ``path`` imports (module level and in functions)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("napari_numsnet."):
                    found.add(top_level(alias.name.split(".", 1)[1]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = list(parts[: len(parts) - node.level])
                target = [*base, *(node.module.split(".") if node.module else [])]
                if target:
                    found.add(target[0])
                elif node.module is None:
                    found.update(alias.name for alias in node.names)
            elif node.module == "napari_numsnet":
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("napari_numsnet."):
                found.add(top_level(node.module.split(".", 1)[1]))
    return found


def test_every_module_has_a_rank():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    names = {
        n for n in names if not n.startswith(("__", ".")) and n not in {"napari", "sample_data"}
    }
    assert names <= set(RANKS), sorted(names - set(RANKS))


def test_imports_point_one_way():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for name in imports_of(path) - {own}:
            if name in RANKS and RANKS[name] > RANKS[own]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong, "\n".join(wrong)
