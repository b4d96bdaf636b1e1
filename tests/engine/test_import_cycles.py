"""No import cycle anywhere in `segaccel/`, and the layering of DESIGN §3, counting function-level and
TYPE_CHECKING imports.

Every `import` / `from ... import` anywhere in a module of `segaccel/` (ast.walk reaches function
bodies and `if TYPE_CHECKING:` blocks) is an edge to the segaccel module it names (`from pkg import
mod` is an edge to `pkg.mod` when that is a module, else to `pkg`); a cycle is a strongly connected
component of more than one module.
"""

import ast
from pathlib import Path

SEGACCEL = Path(__file__).resolve().parents[2] / "segaccel"


def import_graph(root: Path) -> dict[str, set[str]]:
    """`{module: segaccel modules it imports}` for every module under `root` (a package folder)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.with_suffix("").relative_to(root.parent).parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def deepest(name: str) -> str | None:
        parts = name.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or None

    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: anchored at this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges.update(t for t in map(deepest, names) if t and t != module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_function_level_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    (pkg / "d.py").write_text("import pkg.a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_no_import_cycle_runs_through_the_engine():
    graph = import_graph(SEGACCEL)
    assert {"segaccel.engine.loops", "segaccel.engine.runner"} <= set(graph)
    assert "segaccel.engine.loop_context" in graph["segaccel.engine.loops"]
    through_engine = [c for c in cycles(graph) if any(m.startswith("segaccel.engine") for m in c)]
    assert through_engine == []


# DESIGN §3: the ground floor imports only itself; data/models/evaluation know nothing of the engine or
# of what is built on them; evaluation knows only structures (and the registry it registers in);
# models never import hub/; deploy never imports models/ (an exported folder runs without model code).
GROUND = {"structures", "registry", "config", "visualization", "file_modes", "limits", "model_card"}
ABOVE_THE_MODELS = {"engine", "cli", "hub", "deploy", "export", "benchmark", "inference", ""}


def room(module: str) -> str:
    """`segaccel.engine.loops` -> `engine`; the package itself -> ``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import edge that runs against DESIGN §3's layering, as `a -> b (rule)`."""
    found = []
    for module, targets in sorted(graph.items()):
        here = room(module)
        for target in sorted(targets):
            there = room(target)
            if here in GROUND and there not in GROUND:
                found.append(f"{module} -> {target} (the ground floor imports only the ground floor)")
            if here in {"data", "models", "evaluation", "convert"} and there in ABOVE_THE_MODELS:
                found.append(f"{module} -> {target} ({here}/ knows nothing of what is built on it)")
            if here == "evaluation" and there not in {"evaluation", "structures", "registry"}:
                found.append(f"{module} -> {target} (evaluation knows only structures)")
            if here == "deploy" and there in {"models", "engine", "export"}:
                found.append(f"{module} -> {target} (deploy runs without model code)")
    return found


def test_no_import_cycle_anywhere_and_the_layers_hold():
    graph = import_graph(SEGACCEL)
    assert len(graph) > 100 and {"segaccel.models.segmentor", "segaccel.deploy.segmentor"} <= set(graph)
    assert cycles(graph) == []
    assert layering_violations(graph) == []


def test_the_layering_check_names_an_edge_against_the_layers():
    graph = {
        "segaccel.models.segmentor": {"segaccel.hub.push", "segaccel.structures"},
        "segaccel.config": {"segaccel.registry", "segaccel.data.rows"},
        "segaccel.deploy.runtime": {"segaccel.models.segmentor", "segaccel.data.transforms"},
        "segaccel.evaluation.iou_metric": {"segaccel.structures", "segaccel.data.rows"},
    }
    assert layering_violations(graph) == [
        "segaccel.config -> segaccel.data.rows (the ground floor imports only the ground floor)",
        "segaccel.deploy.runtime -> segaccel.models.segmentor (deploy runs without model code)",
        "segaccel.evaluation.iou_metric -> segaccel.data.rows (evaluation knows only structures)",
        "segaccel.models.segmentor -> segaccel.hub.push (models/ knows nothing of what is built on it)",
    ]
