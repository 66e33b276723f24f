"""The packages' layers: no import against the order declared in ``engine/__init__.py``, no circle.

Every ``.py`` file of ``engine/`` and of each plugin package under
``plugins/*/`` (not their tests) is parsed, and every import statement in
it counts: at module level, inside functions and methods, under ``if
TYPE_CHECKING:`` and in ``try`` blocks alike, since each says the module
depends on the other (a lazy import only moves the moment). Relative
imports are resolved, and ``from engine import archive`` counts as an
import of ``engine.archive``. Not counted: names imported by string
(``importlib.import_module``, entry points, the shim's driver), which only
the running configuration knows.

A module belongs to the package it is in, ``engine.<name>`` (the top-level
modules ``engine.errors``, ``engine.cli``, ... are packages of their own,
and ``engine/__init__.py`` is ``engine``); a plugin's modules belong to
its distribution package (``engine_net_bridge``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine

TOP = Path(__file__).resolve().parent.parent
ENGINE = TOP / "engine"
PLUGINS = TOP / "plugins"

#: What a driver plugin may import of the engine (engine.drivers' docstring; the package itself holds constants).
SDK = ("engine", "engine.drivers", "engine.errors", "engine.archive", "engine.sys")

#: What the client may import of the engine: the libraries of layers 1 to 4 (it talks to the
#: daemon over HTTP only: no driver, store or job). It checks flags as the docker CLI does
#: (engine.sys.security's sysctl names) and packs build contexts (engine.archive).
CLIENT_MAY_IMPORT = ("engine", "engine.errors", "engine.utils", "engine.reference", "engine.sys", "engine.archive")

#: Imports allowed against the order, each with its reason. The issue allows one; none is needed.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def declared_layers() -> list[list[str]]:
    """The table of ``engine/__init__.py``'s docstring, bottom first: ``N. a, b  description``."""
    layers: list[list[str]] = []
    for match in re.finditer(r"^\s*(\d+)\. ([a-z_]+(?:, [a-z_]+)*)\s{2,}", engine.__doc__ or "", re.M):
        assert int(match.group(1)) == len(layers) + 1, f"layer {match.group(1)} is out of sequence"
        layers.append([f"engine.{name}" for name in match.group(2).split(", ")])
    return layers


LAYERS = declared_layers()
LAYER_OF = {package: n for n, names in enumerate(LAYERS, 1) for package in names}
LAYER_OF["engine"] = LAYER_OF.get("engine.errors", 1)


def source_files() -> Iterator[tuple[str, Path]]:
    """``(module name, path)`` of every module of the engine and of the plugins' packages."""
    for path in sorted(ENGINE.rglob("*.py")):
        yield _module_name(path, TOP), path
    for path in sorted(PLUGINS.glob("*/engine_*/**/*.py")):
        yield _module_name(path, PLUGINS / path.relative_to(PLUGINS).parts[0]), path


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = dict(source_files())
KNOWN = set(MODULES)
PLUGIN_PACKAGES = {name.split(".")[0] for name in MODULES if name.split(".")[0] != "engine"}


def is_engine(name: str) -> bool:
    """Whether ``name`` is the engine's (``engine`` or ``engine.*``), not a plugin's (``engine_vfs``)."""
    return name == "engine" or name.startswith("engine.")


def package_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "engine":
        return parts[0]
    return ".".join(parts[:2])


def imports_of(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every import statement of the engine in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                # ``from engine import archive`` imports the module engine.archive.
                name = f"{base}.{alias.name}"
                yield node.lineno, name if name in KNOWN else base


def engine_arrows() -> list[tuple[str, str, str]]:
    """``(importing package, imported package, where)`` for each import across packages (the engine's, the plugins')."""
    arrows = []
    for module, path in MODULES.items():
        for line, target in imports_of(module, path):
            if not (is_engine(target) or target.split(".")[0] in PLUGIN_PACKAGES):
                continue
            source, imported = package_of(module), package_of(target)
            if source != imported:
                arrows.append((source, imported, f"{path.relative_to(TOP)}:{line} imports {target}"))
    return arrows


ARROWS = engine_arrows()


def test_the_declared_order_is_read():
    assert len(LAYERS) >= 10 and LAYER_OF["engine.errors"] == 1
    assert LAYER_OF["engine.utils"] < LAYER_OF["engine.sys"] < LAYER_OF["engine.drivers"] < LAYER_OF["engine.daemon"]
    assert LAYER_OF["engine.cli"] > LAYER_OF["engine.client"] == LAYER_OF["engine.api"] == LAYER_OF["engine.daemon"]


def test_every_package_has_a_layer():
    packages = {package_of(m) for m in MODULES if is_engine(m)}
    missing = sorted(packages - set(LAYER_OF))
    assert not missing, f"packages missing from the layer table in engine/__init__.py: {missing}"
    stale = sorted(set(LAYER_OF) - packages)
    assert not stale, f"the layer table names packages that do not exist: {stale}"


def test_no_import_against_the_layers():
    wrong = []
    for source, imported, where in ARROWS:
        if not is_engine(source):
            continue  # plugins: test_plugins_import_only_the_sdk
        if imported not in LAYER_OF:
            wrong.append(f"{where}: the engine imports a plugin")
            continue
        if LAYER_OF[imported] < LAYER_OF[source] or (source, imported) in EXCEPTIONS:
            continue
        side = "in the same layer" if LAYER_OF[imported] == LAYER_OF[source] else "higher"
        wrong.append(f"{where}: {source} is in layer {LAYER_OF[source]}, {imported} {side} ({LAYER_OF[imported]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)
    assert len(EXCEPTIONS) <= 1


def test_no_import_circle_between_packages():
    graph: dict[str, set[str]] = {}
    for source, imported, _ in ARROWS:
        graph.setdefault(source, set()).add(imported)
    circles = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            circles.append(" -> ".join([*path[path.index(node) :], node]))
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert not circles, "import circles between packages:\n" + "\n".join(circles)


def test_plugins_import_only_the_sdk():
    plugins = PLUGIN_PACKAGES
    assert {"engine_graph_vfs", "engine_exec_native", "engine_net_bridge"} <= plugins
    outside = [where for source, imported, where in ARROWS if source in plugins and imported not in SDK]
    assert not outside, f"plugins importing outside {SDK} (or each other):\n" + "\n".join(outside)


def test_the_client_talks_http_only():
    outside = [
        where for source, imported, where in ARROWS if source == "engine.client" and imported not in CLIENT_MAY_IMPORT
    ]
    assert not outside, f"the client imports more than {CLIENT_MAY_IMPORT}:\n" + "\n".join(outside)


@pytest.mark.parametrize("page", ["README.md"])
def test_the_readme_shows_the_same_layers(page):
    text = (TOP / page).read_text()
    shown = [
        [f"engine.{name}" for name in m.group(2).split(", ")]
        for m in re.finditer(r"^\s*(\d+)\. ([a-z_]+(?:, [a-z_]+)*)\s{2,}", text, re.M)
    ]
    assert shown == LAYERS, f"{page}'s layer table differs from engine/__init__.py's"
