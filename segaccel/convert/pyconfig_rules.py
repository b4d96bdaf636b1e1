"""What the config reader (`pyconfig.py`) evaluates: operators, pure builtins, methods; mmengine's merge."""

from __future__ import annotations

import ast
import copy
import operator
from typing import Any

from segaccel.registry import ConfigError

DELETE_KEY = "_delete_"

BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
AUG_OPS = {  # in place, as Python does (`a = b = []; a += [1]` changes b too)
    ast.Add: operator.iadd,
    ast.Sub: operator.isub,
    ast.Mult: operator.imul,
    ast.Div: operator.itruediv,
    ast.FloorDiv: operator.ifloordiv,
    ast.Mod: operator.imod,
    ast.Pow: operator.ipow,
}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
BUILTINS: dict[str, Any] = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "set": set,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "len": len,
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
    "sum": sum,
    "sorted": sorted,
    "range": range,
    "zip": zip,
    "enumerate": enumerate,
    "reversed": reversed,
    "deepcopy": copy.deepcopy,
    "True": True,
    "False": False,
    "None": None,
}
METHODS = {
    dict: ("update", "copy", "get", "keys", "values", "items", "pop", "setdefault"),
    list: ("append", "extend", "insert", "pop", "copy", "index", "count"),
    tuple: ("index", "count"),
    str: ("format", "join", "replace", "split", "strip", "lower", "upper", "startswith", "endswith"),
}


def merge_into(update: dict[str, Any], base: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """mmengine's `_merge_a_into_b`: `update` merged into `base` (modified and returned).

    Dicts merge key by key unless the update holds `_delete_=True` (then it replaces); any other value
    replaces. A dict may not update a non-dict value (mmengine refuses too) without `_delete_`.
    """
    for key, value in update.items():
        if isinstance(value, dict):
            value = dict(value)
            delete = value.pop(DELETE_KEY, False)
            if key in base and not delete:
                if not isinstance(base[key], dict):
                    raise ConfigError(
                        f"{where}: {key}={value!r} is a dict but the _base_ value is a "
                        f"{type(base[key]).__name__}; add _delete_=True to replace it"
                    )
                base[key] = merge_into(value, base[key], where)
            else:
                base[key] = value
        else:
            base[key] = value
    return base
