"""The repository files a stage script can import: its module's closure over `import`s.

Every import counts, including the lazy ones inside functions, so a dependency that is
only reached on one code path still belongs in the stage's `deps:` in dvc.yaml.
"""
from __future__ import annotations

import ast
from pathlib import Path


def _module_file(root: Path, name: str) -> Path | None:
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def import_closure(root: Path, module: str) -> set[str]:
    """Repo-relative paths of every file that importing `module` can load."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            name = ".".join(parts[:i])
            path = _module_file(root, name)
            if path is None or path in seen:
                continue
            seen.add(path)
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    todo += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:  # relative import
                        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join(anchor + ([node.module] if node.module else []))
                    todo.append(base)
                    todo += [f"{base}.{alias.name}" for alias in node.names]
    return {str(p.relative_to(root)) for p in seen}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)
