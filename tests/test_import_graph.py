"""No import cycles inside `backend` or `worker` (docs/architecture.md §2).

A cycle makes two modules one unit in disguise: neither can be read, tested or imported alone,
and import order starts to matter. The graph is grimp's (import-linter's engine); imports under
`TYPE_CHECKING` count, since they tie the modules together just the same. `lint-imports` checks
the same rule between subpackages (the `acyclic_siblings` contract in pyproject.toml).
"""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ("backend", "worker")


def import_cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """One shortest cycle through each import that closes one, as `a -> b -> ... -> a`; each
    cycle once (rotations of the same ring are one)."""
    cycles: dict[frozenset[str], tuple[str, ...]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.setdefault(frozenset(back), (importer, *back))
    return list(cycles.values())


def test_import_cycles_finds_a_ring_through_three_modules() -> None:
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    graph.add_import(importer="pkg.d", imported="pkg.a")  # leads into the ring, is not part of it
    assert import_cycles(graph) == [("pkg.a", "pkg.b", "pkg.c", "pkg.a")]
    graph.remove_import(importer="pkg.c", imported="pkg.a")
    assert import_cycles(graph) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_package_has_no_import_cycle(package: str) -> None:
    graph = grimp.build_graph(package, cache_dir=None)  # this package's modules only
    assert len(graph.modules) > 5, f"{package}: the graph is empty; was the package found?"
    cycles = import_cycles(graph)
    listing = "\n".join("  " + " -> ".join(cycle) for cycle in cycles)
    hint = "move what both sides use to a module of its own"
    assert not cycles, f"{package} has import cycles ({hint}):\n{listing}"
