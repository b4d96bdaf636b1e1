"""Read an MMSegmentation (mmengine) Python config file without executing it.

The file is parsed with `ast` and only a small, pure subset of Python is evaluated: assignments
(also `x['k'] = v`, `x += v`, `a, b = ...`), literals, `dict(...)`, lists, tuples, sets, dict
displays with `**`, arithmetic and comparisons on numbers and sequences, names defined earlier in the
file, subscripts, comprehensions, f-strings, `deepcopy`, the pure builtins (`len`, `min`, `max`,
`int`, `float`, `round`, `range`, `sorted`, `zip`, ...) and the dict/list methods `update`, `copy`,
`get`, `append`, `extend`, `insert`, `pop`, `keys`, `values`, `items`. Nothing is imported and no
function of the file is called; anything else is a `ConfigError` naming the file, the line and the
construct.

Inheritance is mmengine's: `_base_` (a path or a list of paths, relative to the file) is read first
(bases may not define the same top-level key twice), then the file's own variables are merged on top
(dicts key by key, other values replaced; a dict holding `_delete_=True` replaces instead of merging).
`'{{_base_.a.b}}'` strings take a value of the bases. The newer "pure Python" style
(`with read_base(): from .._base_.models.x import *`) is read too; classes imported from
`mmseg`/`mmengine`/`mmpretrain`/`mmcv` stand for their names (`type=EncoderDecoder` → `'EncoderDecoder'`).
"""

from __future__ import annotations

import ast
import copy
import os
import re
from pathlib import Path
from typing import Any

from segaccel.registry import ConfigError

from .pyconfig_rules import AUG_OPS, BINOPS, BUILTINS, COMPARE, DELETE_KEY, METHODS, UNARY, merge_into

BASE_KEY = "_base_"
_QUOTED_BASE_REF = re.compile(r"""(['"])\{\{\s*_base_\.([\w.]+)\s*\}\}\1""")
_BASE_REF = re.compile(r"\{\{\s*_base_\.([\w.]+)\s*\}\}")
_OPENMMLAB_PACKAGES = ("mmseg", "mmengine", "mmpretrain", "mmcv", "mmdet", "torch")

class _Module:
    """An imported module (`import copy`): only `copy.deepcopy` and `copy.copy` are usable."""

    def __init__(self, name: str) -> None:
        self.name = name


class _TypeName(str):
    """A class imported from an OpenMMLab package: stands for its name."""


def read_mmseg_config(path: str | os.PathLike) -> dict[str, Any]:
    """The merged config of an MMSegmentation `.py` config file (and its `_base_` files), as plain data."""
    cfg = _read(Path(path), ())
    return _drop_delete_keys(cfg)


def _read(path: Path, stack: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        raise ConfigError(f"_base_ cycle: {' -> '.join(str(p) for p in (*stack, path))}")
    if not path.is_file():
        where = f" (a _base_ of {stack[-1]})" if stack else ""
        raise FileNotFoundError(f"MMSegmentation config {path} not found{where}")
    if path.suffix != ".py":
        raise ConfigError(f"{path}: only MMSegmentation's Python configs (.py) are read here")
    text = path.read_text(encoding="utf-8")
    # mmengine's `{{_base_.a.b}}` (quoted or not) → `_base_.a.b`, read as a value of the bases
    text = _BASE_REF.sub(r"_base_.\1", _QUOTED_BASE_REF.sub(r"_base_.\2", text))
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid Python: {exc.msg}") from exc
    reader = _Reader(path, stack + (path,))
    return reader.run(tree)


class _Reader:
    """Evaluates one config file's statements into variables."""

    def __init__(self, path: Path, stack: tuple[Path, ...]) -> None:
        self.path = path
        self.stack = stack
        self.env: dict[str, Any] = {}
        self.base: dict[str, Any] = {}  # the merged `_base_` files
        self.visible_base: set[str] = set()  # names a `from ... import *` of read_base made visible

    # --- statements ---------------------------------------------------------------------------
    def run(self, tree: ast.Module) -> dict[str, Any]:
        for node in tree.body:  # `_base_` first, wherever it is written
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == BASE_KEY for t in node.targets
            ):
                self._read_bases(self._eval(node.value), node)
        for node in tree.body:
            self._statement(node)
        own = {
            k: v
            for k, v in self.env.items()
            if k != BASE_KEY and not k.startswith("__") and not isinstance(v, _Module)
            and not (k in self.visible_base and v is self.base.get(k))
        }
        return merge_into(own, copy.deepcopy(self.base), where=str(self.path))

    def _read_bases(self, value: Any, node: ast.AST) -> None:
        files = [value] if isinstance(value, str) else value
        if not isinstance(files, (list, tuple)) or not all(isinstance(f, str) for f in files):
            self._fail(node, f"_base_ must be a path or a list of paths, got {value!r}")
        for name in files:
            if "::" in name:
                self._fail(
                    node,
                    f"_base_ {name!r} names a file inside an installed package; copy that file next to "
                    "this one and name it by a relative path",
                )
            self._add_base(_read(self.path.parent / name, self.stack), name, node)

    def _add_base(self, cfg: dict[str, Any], name: str, node: ast.AST) -> None:
        duplicate = sorted(set(cfg) & set(self.base))
        if duplicate:
            self._fail(node, f"the _base_ files define {duplicate} more than once (last: {name})")
        self.base.update(cfg)

    def _statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == BASE_KEY for t in node.targets):
                self.env[BASE_KEY] = True
                return
            value = self._eval(node.value)
            for target in node.targets:
                self._assign(target, value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self._assign(node.target, self._eval(node.value))
        elif isinstance(node, ast.AugAssign):
            op = AUG_OPS.get(type(node.op))
            if op is None:
                self._fail(node, f"operator {type(node.op).__name__} is not supported")
            current = self._eval(_as_load(node.target))
            self._assign(node.target, self._binop(op, current, self._eval(node.value), node))
        elif isinstance(node, ast.Expr):
            if isinstance(node.value, ast.Constant):  # a docstring
                return
            if isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute):
                self._eval(node.value)  # a method call that mutates (x.update(...), x.append(...))
                return
            self._fail(node, "only assignments and dict/list method calls are read")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                self.env[alias.asname or alias.name.split(".")[0]] = _Module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            self._import_from(node, in_read_base=False)
        elif isinstance(node, ast.With) and _is_read_base(node):
            for inner in node.body:
                if not isinstance(inner, ast.ImportFrom):
                    self._fail(inner, "only `from ... import ...` is allowed inside `with read_base()`")
                self._import_from(inner, in_read_base=True)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.env.pop(target.id, None)
                else:
                    self._fail(node, "only `del name` is supported")
        elif isinstance(node, ast.Pass):
            return
        else:
            self._fail(node, f"{type(node).__name__} statements are not read (no code runs from a config)")

    def _import_from(self, node: ast.ImportFrom, in_read_base: bool) -> None:
        module = node.module or ""
        if in_read_base or node.level > 0:
            if node.level == 0:
                self._fail(node, "read_base imports must be relative (from .._base_.x import *)")
            folder = self.path.parent
            for _ in range(node.level - 1):
                folder = folder.parent
            base = _read(folder.joinpath(*module.split(".")).with_suffix(".py"), self.stack)
            names = [a.name for a in node.names]
            if names == ["*"]:
                self._add_base(base, module, node)
                self.visible_base.update(base)
                self.env.update({k: v for k, v in self.base.items() if k in base})
            else:
                for alias in node.names:
                    if alias.name not in base:
                        self._fail(node, f"{module} defines no {alias.name!r}")
                    self.env[alias.asname or alias.name] = copy.deepcopy(base[alias.name])
            return
        if module == "copy":
            for alias in node.names:
                if alias.name not in ("deepcopy", "copy"):
                    self._fail(node, f"from copy import {alias.name}: only deepcopy/copy are supported")
                self.env[alias.asname or alias.name] = getattr(copy, alias.name)
            return
        if module.split(".")[0] in _OPENMMLAB_PACKAGES:
            for alias in node.names:
                self.env[alias.asname or alias.name] = _TypeName(alias.name)
            return
        for alias in node.names:
            self.env[alias.asname or alias.name] = _Module(f"{module}.{alias.name}")

    def _assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = list(value)
            if len(values) != len(target.elts):
                self._fail(target, f"cannot unpack {len(values)} values into {len(target.elts)} names")
            for elt, v in zip(target.elts, values):
                self._assign(elt, v)
        elif isinstance(target, ast.Subscript):
            container = self._eval(target.value)
            try:
                container[self._eval(target.slice)] = value
            except (TypeError, IndexError, KeyError) as exc:
                self._fail(target, f"cannot assign to this item: {exc}")
        else:
            self._fail(target, f"cannot assign to a {type(target).__name__}")

    # --- expressions --------------------------------------------------------------------------
    def _eval(self, node: ast.expr, scope: dict[str, Any] | None = None) -> Any:
        method = getattr(self, f"_eval_{type(node).__name__}", None)
        if method is None:
            self._fail(node, f"{type(node).__name__} expressions are not supported in a config")
        return method(node, scope or {})

    def _eval_Constant(self, node: ast.Constant, scope: dict[str, Any]) -> Any:
        return node.value

    def _base_value(self, keys: list[str], node: ast.AST) -> Any:
        value: Any = self.base
        for i, key in enumerate(keys):
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, (list, tuple)) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                self._fail(node, f"the _base_ files define no {'.'.join(keys[: i + 1])!r}")
        return value

    def _eval_Name(self, node: ast.Name, scope: dict[str, Any]) -> Any:
        for table in (scope, self.env):
            if node.id in table:
                return table[node.id]
        if node.id in BUILTINS:
            return BUILTINS[node.id]
        if node.id in self.base:
            self._fail(node, f"{node.id!r} is a variable of the _base_ files; write {{{{_base_.{node.id}}}}}")
        self._fail(node, f"name {node.id!r} is not defined")

    def _eval_List(self, node: ast.List, scope: dict[str, Any]) -> list:
        out: list = []
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                out.extend(self._eval(elt.value, scope))
            else:
                out.append(self._eval(elt, scope))
        return out

    def _eval_Tuple(self, node: ast.Tuple, scope: dict[str, Any]) -> tuple:
        return tuple(self._eval_List(node, scope))  # type: ignore[arg-type]

    def _eval_Set(self, node: ast.Set, scope: dict[str, Any]) -> set:
        return set(self._eval_List(node, scope))  # type: ignore[arg-type]

    def _eval_Dict(self, node: ast.Dict, scope: dict[str, Any]) -> dict:
        out: dict = {}
        for key, value in zip(node.keys, node.values):
            if key is None:  # {**other}
                out.update(self._eval(value, scope))
            else:
                out[self._eval(key, scope)] = self._eval(value, scope)
        return out

    def _eval_BinOp(self, node: ast.BinOp, scope: dict[str, Any]) -> Any:
        op = BINOPS.get(type(node.op))
        if op is None:
            self._fail(node, f"operator {type(node.op).__name__} is not supported")
        return self._binop(op, self._eval(node.left, scope), self._eval(node.right, scope), node)

    def _binop(self, op: Any, left: Any, right: Any, node: ast.AST) -> Any:
        try:
            return op(left, right)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            self._fail(node, str(exc))

    def _eval_UnaryOp(self, node: ast.UnaryOp, scope: dict[str, Any]) -> Any:
        op = UNARY.get(type(node.op))
        if op is None:
            self._fail(node, f"operator {type(node.op).__name__} is not supported")
        return op(self._eval(node.operand, scope))

    def _eval_BoolOp(self, node: ast.BoolOp, scope: dict[str, Any]) -> Any:
        result = None
        for value in node.values:
            result = self._eval(value, scope)
            if isinstance(node.op, ast.And) and not result or isinstance(node.op, ast.Or) and result:
                return result
        return result

    def _eval_Compare(self, node: ast.Compare, scope: dict[str, Any]) -> bool:
        left = self._eval(node.left, scope)
        for op, comparator in zip(node.ops, node.comparators):
            right = self._eval(comparator, scope)
            if not COMPARE[type(op)](left, right):
                return False
            left = right
        return True

    def _eval_IfExp(self, node: ast.IfExp, scope: dict[str, Any]) -> Any:
        return self._eval(node.body if self._eval(node.test, scope) else node.orelse, scope)

    def _eval_Subscript(self, node: ast.Subscript, scope: dict[str, Any]) -> Any:
        container = self._eval(node.value, scope)
        try:
            return container[self._eval(node.slice, scope)]
        except (TypeError, IndexError, KeyError) as exc:
            self._fail(node, f"no such item: {exc!r}")

    def _eval_Slice(self, node: ast.Slice, scope: dict[str, Any]) -> slice:
        parts = [None if n is None else self._eval(n, scope) for n in (node.lower, node.upper, node.step)]
        return slice(*parts)

    def _eval_Attribute(self, node: ast.Attribute, scope: dict[str, Any]) -> Any:
        chain, root = [node.attr], node.value
        while isinstance(root, ast.Attribute):
            chain.insert(0, root.attr)
            root = root.value
        if isinstance(root, ast.Name) and root.id == BASE_KEY:  # _base_.a.b (mmengine's {{_base_.a.b}})
            return copy.deepcopy(self._base_value(chain, node))
        owner = self._eval(node.value, scope)
        if isinstance(owner, _Module):
            if owner.name == "copy" and node.attr in ("deepcopy", "copy"):
                return getattr(copy, node.attr)
            if owner.name.split(".")[0] in _OPENMMLAB_PACKAGES:
                return _TypeName(node.attr)
            self._fail(node, f"{owner.name}.{node.attr} cannot be used (nothing is imported)")
        allowed = next((names for kind, names in METHODS.items() if isinstance(owner, kind)), ())
        if node.attr not in allowed:
            self._fail(node, f"{type(owner).__name__}.{node.attr} is not supported")
        return getattr(owner, node.attr)

    def _eval_Call(self, node: ast.Call, scope: dict[str, Any]) -> Any:
        func = self._eval(node.func, scope)
        if isinstance(func, _TypeName):
            self._fail(node, f"calling {func} is not supported")
        pure = func in BUILTINS.values() or func in (copy.copy,) or _is_bound_method(func)
        if not pure or isinstance(func, _Module):
            self._fail(node, f"calling {ast.unparse(node.func)} is not supported in a config")
        args: list = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                args.extend(self._eval(arg.value, scope))
            else:
                args.append(self._eval(arg, scope))
        kwargs: dict = {}
        for kw in node.keywords:
            if kw.arg is None:
                kwargs.update(self._eval(kw.value, scope))
            else:
                kwargs[kw.arg] = self._eval(kw.value, scope)
        try:
            result = func(*args, **kwargs)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            self._fail(node, f"{ast.unparse(node.func)}(...) failed: {exc}")
        return list(result) if isinstance(result, (zip, enumerate, reversed, map, range)) else result

    def _eval_JoinedStr(self, node: ast.JoinedStr, scope: dict[str, Any]) -> str:
        return "".join(str(self._eval(v, scope)) for v in node.values)

    def _eval_FormattedValue(self, node: ast.FormattedValue, scope: dict[str, Any]) -> str:
        value = self._eval(node.value, scope)
        spec = self._eval(node.format_spec, scope) if node.format_spec is not None else ""
        value = {115: str, 114: repr, 97: ascii}.get(node.conversion, lambda v: v)(value)
        return format(value, spec)

    def _comprehension(self, generators: list[ast.comprehension], scope: dict[str, Any]):
        if not generators:
            yield scope
            return
        first, rest = generators[0], generators[1:]
        for item in self._eval(first.iter, scope):
            inner = dict(scope)
            self._bind(first.target, item, inner)
            if all(self._eval(cond, inner) for cond in first.ifs):
                yield from self._comprehension(rest, inner)

    def _bind(self, target: ast.expr, value: Any, scope: dict[str, Any]) -> None:
        if isinstance(target, ast.Name):
            scope[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt, v in zip(target.elts, value):
                self._bind(elt, v, scope)
        else:
            self._fail(target, "comprehension targets must be names")

    def _eval_ListComp(self, node: ast.ListComp, scope: dict[str, Any]) -> list:
        return [self._eval(node.elt, s) for s in self._comprehension(node.generators, scope)]

    def _eval_GeneratorExp(self, node: ast.GeneratorExp, scope: dict[str, Any]) -> list:
        return [self._eval(node.elt, s) for s in self._comprehension(node.generators, scope)]

    def _eval_SetComp(self, node: ast.SetComp, scope: dict[str, Any]) -> set:
        return {self._eval(node.elt, s) for s in self._comprehension(node.generators, scope)}

    def _eval_DictComp(self, node: ast.DictComp, scope: dict[str, Any]) -> dict:
        return {
            self._eval(node.key, s): self._eval(node.value, s)
            for s in self._comprehension(node.generators, scope)
        }

    def _fail(self, node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", "?")
        raise ConfigError(f"{self.path}:{line}: {message}")


def _is_bound_method(func: Any) -> bool:
    owner = getattr(func, "__self__", None)
    return owner is not None and any(
        isinstance(owner, kind) and func.__name__ in names for kind, names in METHODS.items()
    )


def _is_read_base(node: ast.With) -> bool:
    return len(node.items) == 1 and isinstance(node.items[0].context_expr, ast.Call) and isinstance(
        node.items[0].context_expr.func, ast.Name
    ) and node.items[0].context_expr.func.id == "read_base"


def _as_load(target: ast.expr) -> ast.expr:
    node = copy.copy(target)
    node.ctx = ast.Load()
    return node


def _drop_delete_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_delete_keys(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_drop_delete_keys(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_drop_delete_keys(v) for v in value)
    if isinstance(value, _TypeName):
        return str(value)
    return value
