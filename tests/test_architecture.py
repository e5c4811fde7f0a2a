"""The architecture holds (issue 14): import-linter's layer contracts (pyproject.toml), module and function sizes,
and module-level imports of the project's own modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "minority"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_contracts_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    res = subprocess.run([str(lint), "--config", str(SRC.parents[1] / "pyproject.toml")], capture_output=True,
                         text=True, cwd=SRC.parents[1])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "broken" not in res.stdout.split("Contracts:")[-1].split("\n")[0] or " 0 broken" in res.stdout


def test_no_module_over_400_lines():
    big = {str(p.relative_to(SRC)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def _long_functions(path: Path) -> list[str]:
    """Functions over 60 lines whose body does not start with a comment line saying why (``# long: ...``)."""
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and not any("# long:" in ln for ln in lines[node.lineno - 1:node.end_lineno]):
                out.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_long_functions_say_why():
    long = [f for p in _modules() for f in _long_functions(p)]
    assert not long, "functions over 60 lines without a '# long: <why>' comment:\n" + "\n".join(long)


def _function_level_project_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minority"):
                line = lines[node.lineno - 1]
                if "# lazy:" not in line and "# lazy:" not in lines[fn.lineno - 1] and not _lazy_doc(fn):
                    out.append(f"{path.relative_to(SRC)}:{node.lineno} {node.module}")
    return out


def _lazy_doc(fn: ast.AST) -> bool:
    """A function whose docstring says its imports are lazy on purpose (e.g. the CLI's command loaders)."""
    doc = ast.get_docstring(fn) or ""
    return "lazily" in doc or "lazy" in doc


def test_project_imports_at_module_level():
    """Imports of the project's own modules sit at module level (layers visible at the top of each file), except
    where a comment says why (``# lazy: <why>`` — e.g. the CLI must not load torch for ``--help``)."""
    found = [f for p in _modules() for f in _function_level_project_imports(p)]
    assert not found, "function-level imports of minority modules without a '# lazy:' reason:\n" + "\n".join(found)
