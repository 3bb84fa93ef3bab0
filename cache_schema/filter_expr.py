"""``--where`` expressions over the sample index, parsed safely (never ``eval``).

Grammar (Python syntax, a small subset)::

    expr := expr and expr | expr or expr | not expr | (expr)
          | operand CMP operand [CMP operand ...]       CMP: == != < <= > >=
          | operand in [const, ...] | operand not in (const, ...)
          | contains(col, "text") | startswith(col, "text") | endswith(col, "text")
    operand := col | lower(col) | "string" | number
    col := sample_id | prompt | seed | shard

Example: ``seed < 100 and not contains(lower(prompt), "ring")``.
"""

from __future__ import annotations

import ast
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .errors import OperationRefused

COLUMNS = ("sample_id", "prompt", "seed", "shard")
_COMPARE = {ast.Eq: pc.equal, ast.NotEq: pc.not_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal,
            ast.Gt: pc.greater, ast.GtE: pc.greater_equal}
_PREDICATES = {"contains": pc.match_substring, "startswith": pc.starts_with, "endswith": pc.ends_with}


class _Compiler:
    def __init__(self, text: str, table: pa.Table):
        self.text, self.table = text, table

    def fail(self, node: ast.AST, why: str) -> OperationRefused:
        part = ast.get_source_segment(self.text, node) or type(node).__name__
        return OperationRefused(f"--where {self.text!r}: {why} at {part!r}. Allowed: columns "
                                f"{', '.join(COLUMNS)}; == != < <= > >=; in [...]; and/or/not; "
                                "contains/startswith/endswith(col, \"text\"); lower(col)")

    def boolean(self, node: ast.AST) -> pa.ChunkedArray:
        if isinstance(node, ast.BoolOp):
            values = [self.boolean(v) for v in node.values]
            combine = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
            out = values[0]
            for value in values[1:]:
                out = combine(out, value)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return pc.invert(self.boolean(node.operand))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in _PREDICATES:
            if len(node.args) != 2 or node.keywords:
                raise self.fail(node, "a predicate takes (column, \"text\")")
            pattern = self.operand(node.args[1])
            if not isinstance(pattern, str):
                raise self.fail(node.args[1], "the pattern must be a string")
            return _PREDICATES[node.func.id](self.string_column(node.args[0]), pattern)
        raise self.fail(node, "not a condition")

    def compare(self, node: ast.Compare) -> pa.ChunkedArray:
        out, left = None, node.left
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                    raise self.fail(right, "'in' needs a list of constants")
                column = self.operand(left, column_only=True)
                values = [self.constant(v) for v in right.elts]
                try:
                    test = pc.is_in(column, value_set=pa.array(values, type=column.type))
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                    raise self.fail(right, f"the values do not match the column's type "
                                           f"{column.type} ({exc})") from None
                test = pc.invert(test) if isinstance(op, ast.NotIn) else test
            elif type(op) in _COMPARE:
                try:
                    test = _COMPARE[type(op)](self.operand(left), self.operand(right))
                except (pa.ArrowNotImplementedError, pa.ArrowInvalid, TypeError, OverflowError) as exc:
                    raise self.fail(node, f"cannot compare these types ({exc})") from None
            else:
                raise self.fail(node, "unsupported comparison")
            out = test if out is None else pc.and_kleene(out, test)
            left = right
        if not isinstance(out, (pa.ChunkedArray, pa.Array)):
            raise self.fail(node, "compares constants only; name a column")
        return out

    def operand(self, node: ast.AST, *, column_only: bool = False) -> Any:
        if isinstance(node, ast.Name):
            if node.id not in COLUMNS:
                raise self.fail(node, f"unknown column {node.id!r}")
            return self.table.column(node.id)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lower":
            if len(node.args) != 1 or node.keywords:
                raise self.fail(node, "lower takes one column")
            return pc.utf8_lower(self.string_column(node.args[0]))
        if column_only:
            raise self.fail(node, "expected a column")
        return self.constant(node)

    def string_column(self, node: ast.AST) -> Any:
        column = self.operand(node, column_only=True)
        if not pa.types.is_string(column.type):
            raise self.fail(node, "expected a text column (sample_id, prompt, shard)")
        return column

    def constant(self, node: ast.AST) -> Any:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.constant(node.operand)
            if isinstance(value, (int, float)):
                return -value
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)) \
                and not isinstance(node.value, bool):
            return node.value
        raise self.fail(node, "expected a string or number")


def evaluate_where(text: str, table: pa.Table) -> list[bool]:
    """Per index row: does ``text`` hold? Raises OperationRefused naming the bad part."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        pointer = " " * max((exc.offset or 1) - 1, 0) + "^"
        raise OperationRefused(f"--where is not a valid expression ({exc.msg}):\n  "
                               f"{text.strip()}\n  {pointer}") from None
    except (RecursionError, MemoryError):
        raise OperationRefused("--where expression is too deeply nested") from None
    mask = _Compiler(text.strip(), table).boolean(tree.body)
    return [bool(v) for v in pc.fill_null(mask, False).to_pylist()]
