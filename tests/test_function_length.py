"""No function of the project is longer than MAX_LINES (issue 25: a thin, readable top floor).

A function is counted from its ``def`` line to the last line of its body, docstring included
(decorators not); a nested function or a method counts on its own and within its parent.
"""

from __future__ import annotations

import ast
import pathlib
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("cache_schema", "teacher_jobs", "student_train", "pipeline", "bench")
MAX_LINES = 60

# "module:qualname" -> why it is still long. Only for files other helpers own while they work
# on them (pipeline/graph/runner.py, pipeline/compare/grid.py, pipeline/eval.py); the list may
# only shrink: an entry that is short again, or gone, fails test_the_allowlist_only_names_long_functions.
ALLOWED: dict[str, str] = {}


def long_functions(source: str, module: str, limit: int = MAX_LINES) -> dict[str, int]:
    """{"module:qualname": lines} of every function in ``source`` longer than ``limit`` lines."""
    found: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = child.end_lineno - child.lineno + 1  # lineno: the def, not a decorator
                if lines > limit:
                    found[f"{module}:{prefix}{child.name}"] = lines
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:  # functions defined under if / try / with
                walk(child, prefix)

    walk(ast.parse(source), "")
    return found


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_long_functions() -> dict[str, int]:
    found: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found |= long_functions(path.read_text(), _module_name(path))
    return found


def test_no_function_is_longer_than_the_limit():
    over = {name: lines for name, lines in project_long_functions().items() if name not in ALLOWED}
    listing = "\n  ".join(f"{name}: {lines} lines" for name, lines in sorted(over.items()))
    assert not over, (f"functions over {MAX_LINES} lines (split each into small functions with "
                      f"one job):\n  {listing}")


def test_the_allowlist_only_names_long_functions():
    found = project_long_functions()
    stale = sorted(name for name in ALLOWED if name not in found)
    assert not stale, f"no longer over {MAX_LINES} lines (or gone): remove from ALLOWED: {stale}"


def test_the_counter_sees_long_functions_wherever_they_are_defined():
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    source = textwrap.dedent('''\
        import functools

        @functools.cache
        def exactly_sixty():
            """Docstring lines count."""
        {body}

        def sixty_one():
            """Docstring lines count."""
        {body}
            return x0

        class Holder:
            def method(self):
                def inner():
                    """Nested: counted on its own."""
        {deep}
                    return 1
                return inner

        if True:
            def under_if():
                """Under an if: still found."""
        {mid}
                return None
        ''').format(body=body, mid=textwrap.indent(body, "    "),
                   deep=textwrap.indent(body, "        "))
    found = long_functions(source, "m")
    assert found == {"m:sixty_one": 61, "m:Holder.method": 63, "m:Holder.method.inner": 61,
                     "m:under_if": 61}
    assert "m:exactly_sixty" not in found  # 60 lines from def: allowed, decorator not counted


def test_module_names_follow_the_package_path():
    assert _module_name(ROOT / "pipeline" / "graph" / "runner.py") == "pipeline.graph.runner"
    assert _module_name(ROOT / "cache_schema" / "__init__.py") == "cache_schema"
