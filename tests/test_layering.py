"""One direction of imports, visible in the folder names (checked on the source, functions' imports included)."""

import ast
from pathlib import Path

import medcbm

# a package may import only packages of a lower rank (and itself)
RANK = {"_root": 0, "data": 1, "metrics": 1, "backbones": 2, "protocols": 2, "knowledge": 3, "concepts": 4,
        "bottleneck": 5, "methods": 6, "adapt": 6, "audit": 6.5, "benchmarks": 7, "workflows": 7, "review": 7.5, "quickstart": 8, "api": 8.5, "cli": 9}


def _package(module: str) -> str:
    if module == "medcbm.__init__":  # the package's front door re-exports the facade (medcbm.api)
        return "api"
    part = module.split(".")[1] if module.count(".") else "_root"
    return "_root" if part.startswith("_") or part in ("errors", "engines") else part


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medcbm"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("medcbm"))
    return out


def test_imports_point_down_the_layers():
    root = Path(medcbm.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        pkg = _package(".".join(rel.parts))
        assert pkg in RANK, f"{rel}: package '{pkg}' has no layer; add it to RANK"
        for mod in _imports(path):
            dep = _package(mod)
            if dep != pkg and RANK[dep] >= RANK[pkg]:
                bad.append(f"{rel} ({pkg}) imports {mod} ({dep})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_the_model_imports_no_evaluation_code():
    root = Path(medcbm.__file__).parent / "bottleneck"
    for path in root.glob("*.py"):
        assert not {m for m in _imports(path) if _package(m) in ("methods", "benchmarks", "protocols", "metrics",
                                                                  "workflows")}, path
