"""The package boundaries of ARCHITECTURE.md, read from the source (every import statement, at
module level or inside a function) and checked; plus the launch path's imports at run time.

Rules:
- domain packages never import the CLI (only cli/ prints, parses options, exits);
- launch/, interconnect/, profiles/, containers/ and edf/ never import images/ (images imports
  edf and containers, never the reverse); launch/ and interconnect/ never import edf/ or containers/;
- nothing reachable from `cordee launch`, `cordee env show|check` or `cordee --help` imports
  torch, Jinja2 or PyYAML: those run in every task of a job and on login nodes (checked here from
  the source; tests/test_cli.py checks the same paths at run time).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "cordee"
HEAVY = ("torch", "jinja2", "yaml", "numpy")

# importer package -> packages it must not import (module names under cordee.)
FORBIDDEN = {
    "launch": ("cli", "images", "edf", "containers", "interconnect"),
    "interconnect": ("cli", "images", "edf", "containers", "launch"),
    "profiles": ("cli", "images", "edf", "containers"),
    "containers": ("cli", "images", "edf"),
    "edf": ("cli", "images"),
    "images": ("cli",),
    # the engines are shared by preflight and `cordee bench`: they know nothing of either
    "bench": ("cli", "images", "edf", "containers", "preflight", "train"),
    # (preflight/citemplate checks --environment with the image-name grammar of images/spec)
    "preflight": ("cli", "edf", "containers", "train"),
    "train": ("cli", "images", "edf", "containers", "preflight", "interconnect"),
    # filesystems and datasets: used by preflight, train (jobrender) and the io/data verbs
    "storage": ("cli", "images", "containers", "preflight", "train", "bench", "interconnect"),
}
LAUNCH_PATH_ROOTS = ("cordee.cli", "cordee.cli.launch", "cordee.cli.env", "cordee.cli.env_check")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py", modules)


def imports_in(text: str, name: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """Every module a file imports anywhere in it; `from pkg import mod` counts as pkg.mod."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(text, name)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module) if p)
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules)
    return found


def test_the_parser_sees_imports_inside_functions():
    """The checker itself: a deferred or relative import is an import (a boundary check that missed
    them could never fail on the lazy imports this package uses everywhere)."""
    text = "def f():\n    from cordee.images import render\n    import torch\n    from ..edf import load\n"
    found = imports_in(text, "cordee.launch.x", False, all_modules())
    assert {"cordee.images.render", "torch", "cordee.edf.load"} <= found


def violations() -> list[str]:
    modules = all_modules()
    out = []
    for name, path in sorted(modules.items()):
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in FORBIDDEN:
            continue
        for imported in sorted(imports_of(path, modules)):
            ip = imported.split(".")
            if ip[0] == "cordee" and len(ip) > 1 and ip[1] in FORBIDDEN[parts[1]]:
                out.append(f"{name} imports {imported}")
    return out


def test_package_boundaries():
    assert violations() == []


def reachable(roots: tuple[str, ...]) -> dict[str, str]:
    """Module -> the module that first imported it, over every import in every reached file."""
    modules = all_modules()
    seen: dict[str, str] = {r: "" for r in roots}
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = modules.get(name)
        if path is None:
            continue
        for imported in imports_of(path, modules):
            # importing a.b.c runs a/__init__.py and a/b/__init__.py too
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix not in seen:
                    seen[prefix] = name
                    todo.append(prefix)
    return seen


def test_launch_path_never_imports_heavy_libraries():
    seen = reachable(LAUNCH_PATH_ROOTS)
    heavy = {m: by for m, by in seen.items() if m.split(".")[0] in HEAVY}
    assert heavy == {}, f"imported on the launch/env path (module: by): {heavy}"


def add_import(monkeypatch, importer: str, imported: str) -> None:
    """Make the checker read one more import in `importer`, as if its source had it."""
    assert imported in all_modules()
    real = imports_of

    def patched(path, mods):
        found = real(path, mods)
        return found | {imported} if module_name(path) == importer else found

    monkeypatch.setattr(sys.modules[__name__], "imports_of", patched)


def test_a_heavy_import_on_the_launch_path_would_be_caught(monkeypatch):
    """The rule can fail: route a launch-path module to one that imports yaml."""
    add_import(monkeypatch, "cordee.cli.launch", "cordee.images.spec.load")
    assert "yaml" in reachable(LAUNCH_PATH_ROOTS)


def test_a_boundary_violation_would_be_caught(monkeypatch):
    add_import(monkeypatch, "cordee.launch.plan", "cordee.images.render")
    assert violations() == ["cordee.launch.plan imports cordee.images.render"]
