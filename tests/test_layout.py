"""The layout follows the data flow: shared modules import no stage, a stage imports no stage downstream of
it (evaluation reads the synthesis stage's corpus reader, nothing else), and no module imports itself
back through others. Imports are read from the source (module level and inside functions alike;
`if TYPE_CHECKING:` blocks are not imports at run time)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("synth", "release", "train", "evaluation", "budget", "doctor", "cli")
MAY_IMPORT = {
    "synth": set(),
    "release": set(),
    "train": set(),
    "evaluation": {"synth"},
    "budget": {"evaluation"},
    "doctor": {"synth", "train", "evaluation", "budget"},
    "cli": set(STAGES),
}
"""The stages each stage may import besides the shared modules (errors, recipes, llm, cards, prompts...)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "in2").rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, known: set[str]) -> set[str]:
    """The in2 modules a file imports (a `from package import name` of a submodule counts as that module)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "in2")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "in2":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return out


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_nothing_upstream_imports_downstream():
    wrong = []
    for module, targets in graph().items():
        mine = stage(module)
        allowed = MAY_IMPORT.get(mine, set()) | ({mine} if mine else set())
        wrong += [f"{module} -> {t}" for t in sorted(targets) if stage(t) and stage(t) not in allowed]
    assert wrong == []


def test_the_engine_names_no_backend():
    """Backends are found by name in the registry (in2.llm.base), never imported or named by the engine."""
    edges = graph()
    backends = {"in2.llm.openai_backend", "in2.llm.local_backend"}
    assert not edges["in2.llm.engine"] & backends and not edges["in2.llm.base"] & backends
    text = (SRC / "in2" / "llm" / "engine.py").read_text()
    assert "openai" not in text.lower() and "transformers" not in text


def test_the_checker_sees_a_cycle_and_a_wrong_import():
    """The checks above can fail: a made-up graph with a cycle and an evaluation -> train import."""
    assert cycles({"in2.a": {"in2.b"}, "in2.b": {"in2.c"}, "in2.c": {"in2.a"}}) == [["in2.a", "in2.b", "in2.c"]]
    assert stage("in2.evaluation.suite") == "evaluation" and "train" not in MAY_IMPORT["evaluation"]
