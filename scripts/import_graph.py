"""The import graph of the package and the layering it must keep.

    python scripts/import_graph.py            # list violations (exit 1 if any)
    python scripts/import_graph.py --write docs/architecture.md   # the graph as a Mermaid diagram

Every import of `trainers/`, `modeling_ems/` and `hub_cards/` is read from the source (module level and inside
functions alike), and checked against `LAYERS`: a module may import from a lower layer, or from its own group of its
own layer; a method's package (`trainers/recipes/<method>/`) is a group of its own, so methods never import each
other, and no generic module imports a method. `modeling_ems`, which ships inside Hub model repos, imports nothing
of this package. And the graph has no cycle.
"""

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_ems", "hub_cards", "trainers")
# Bottom to top; each entry a group, named by its module prefix. `trainers.recipes.<method>` (any subpackage of
# trainers/recipes) is a group of the methods' layer.
LAYERS = [
    ["modeling_ems", "hub_cards", "trainers.verbosity"],
    ["trainers.config", "trainers.files", "trainers.layout", "trainers.metrics", "trainers.loss_logging",
     "trainers.length_grouping", "trainers.full_weights", "trainers.tokenizer", "trainers.encoding", "trainers.data"],
    ["trainers.losses", "trainers.grad_cache", "trainers.collators", "trainers.loading",
     "trainers.evaluation", "trainers.cards", "trainers.hub", "trainers.prepare"],
    ["trainers.hard_negatives", "trainers.export", "trainers.arguments"],  # arguments: checks of trainers.losses
    ["trainers.recipes"],  # base.py, encoder.py and the registry
    ["<method>"],
    ["trainers.compare"],  # the instrument that judges every model
    ["trainers.cli", "trainers"],
]
METHODS_PACKAGE = "trainers.recipes"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the packages: dotted name -> file."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if "metrics" in parts[:-1] and parts[-1] != "metrics":  # evaluate metric scripts load by path
                continue
            found[".".join(parts)] = path
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    known = modules(root)
    graph = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in known:  # `from x import name`: the module x
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def group(module: str) -> tuple[int, str]:
    """(layer, group) of a module."""
    prefix = METHODS_PACKAGE + "."
    if module.startswith(prefix) and (ROOT / Path(*module.split(".")[:3])).is_dir():
        return [i for i, layer in enumerate(LAYERS) if "<method>" in layer][0], ".".join(module.split(".")[:3])
    best = None
    for index, layer in enumerate(LAYERS):
        for name in layer:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (index, name)
    if best is None:
        raise ValueError(f"{module} is in no layer of scripts/import_graph.py's LAYERS; add it.")
    return best


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports against the layering, and cycles."""
    found = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            (source_layer, source_group), (target_layer, target_group) = group(source), group(target)
            if source.startswith("modeling_ems") and not target.startswith("modeling_ems"):
                found.append(f"{source} -> {target}: modeling_ems ships alone in Hub repos")
            elif target_layer > source_layer or (target_layer == source_layer and target_group != source_group):
                found.append(f"{source} -> {target}: layer {source_layer} ({source_group}) imports from layer "
                             f"{target_layer} ({target_group})")
    found += [f"cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected part of the graph (depth-first search)."""
    state, stack, found = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def mermaid(graph: dict[str, set[str]]) -> str:
    """The graph between groups, bottom layer last, as a Mermaid flowchart."""
    edges = sorted({(group(source)[1], group(target)[1]) for source, targets in graph.items() for target in targets
                    if group(source)[1] != group(target)[1]})
    nodes = sorted({name for edge in edges for name in edge}, key=lambda name: (-group(name)[0], name))
    lines = ["flowchart TD"]
    for layer in sorted({group(name)[0] for name in nodes}, reverse=True):
        lines.append(f"  subgraph layer{layer}[layer {layer}]")
        lines += [f"    {name.replace('.', '_')}[{name}]" for name in nodes if group(name)[0] == layer]
        lines.append("  end")
    lines += [f"  {a.replace('.', '_')} --> {b.replace('.', '_')}" for a, b in edges]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", help="Write the graph (Mermaid, in markdown) to this file.")
    args = parser.parse_args(argv)
    graph = import_graph()
    if args.write:
        text = ("# The import graph\n\nMade by `python scripts/import_graph.py --write docs/architecture.md`; "
                "`tests/test_architecture.py` checks the layering. An arrow is an import; every arrow points down "
                "a layer, never up, and methods never import each other.\n\n```mermaid\n"
                f"{mermaid(graph)}\n```\n")
        Path(args.write).write_text(text)
    problems = violations(graph)
    print("\n".join(problems) or f"{len(graph)} modules, no violation of the layering, no cycle.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
