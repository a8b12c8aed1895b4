"""The package map holds: `search` is a library that knows nothing of `api` or `indexer`,
those two never import each other, and both use only the engine's public names.

Parsed with `ast` (every import statement, including ones inside functions), then checked
against the `__all__` of the module imported from, so a private name fails even when it
happens to exist."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The public faces: `search` and the sub-packages that declare `__all__`.
PUBLIC_MODULES = ("search", "search.models")


def _imports(package: str) -> Iterator[tuple[Path, int, str, list[str]]]:
    """(file, line, module, names) for every import in a package; names empty for `import x`."""
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, node.lineno, alias.name, []
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.lineno, node.module, [a.name for a in node.names]


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def test_search_imports_neither_indexer_nor_api() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} {m}" for p, line, m, _ in _imports("search")
           if _top(m) in {"indexer", "api"}]
    assert bad == []


@pytest.mark.parametrize(("package", "other"), [("api", "indexer"), ("indexer", "api")])
def test_api_and_indexer_do_not_import_each_other(package: str, other: str) -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} {m}" for p, line, m, _ in _imports(package)
           if _top(m) == other]
    assert bad == []


@pytest.mark.parametrize("package", ["api", "indexer"])
def test_api_and_indexer_use_only_public_names_of_search(package: str) -> None:
    public = {m: set(importlib.import_module(m).__all__) for m in PUBLIC_MODULES}
    bad = []
    for path, line, module, names in _imports(package):
        if _top(module) != "search":
            continue
        where = f"{path.relative_to(ROOT)}:{line}"
        if module not in public:
            bad.append(f"{where} imports from private module {module}")
        elif not names:
            bad.append(f"{where} imports the module {module} itself; import names from it")
        else:
            bad += [f"{where} {module}.{n} is not public" for n in names
                    if n not in public[module]]
    assert bad == []


def test_public_names_exist() -> None:
    for module in PUBLIC_MODULES:
        imported = importlib.import_module(module)
        missing = [n for n in imported.__all__ if not hasattr(imported, n)]
        assert missing == [], f"{module}.__all__ names what it does not define"
