"""The package layout is the architecture: dependencies point one way down the data flow
(docs/ARCHITECTURE.md lists what each subpackage may import), there is no import cycle, and
prediction never imports torch. Static over ast, so nothing is imported to check it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "facegender"

# What each part may import from the package (besides itself). Keep in step with
# docs/ARCHITECTURE.md; the base modules (errors, labels, version, options, lazy) are open to
# everyone.
BASE = {"errors", "labels", "version", "options", "lazy"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "labels": {"errors"},
    "version": set(),
    "options": {"errors"},
    "lazy": set(),
    # each verb's options, declared once (models: the architecture names; infer: --device's check;
    # faces: the detector names)
    "verbs": BASE | {"models", "infer", "faces"},
    "io": BASE,
    "faces": BASE | {"io"},
    "models": BASE | {"io", "faces"},
    "infer": BASE | {"io", "faces", "models"},
    "report": BASE | {"io", "faces", "models", "infer"},
    "training": BASE | {"io", "faces", "models", "infer", "report", "verbs"},
    "serve": BASE | {"io", "faces", "models", "infer"},
    "scale": BASE | {"io", "faces", "models", "infer"},
    "cli": BASE | {"io", "faces", "models", "infer", "report", "training", "serve", "scale", "verbs",
            "cli_tracks"},
    "__init__": BASE | {"io", "faces", "models", "infer", "report", "training", "scale", "verbs"},
    "__main__": {"cli"},
    # predict --track's CLI path, kept out of cli.py to keep that short; only cli imports it
    "cli_tracks": BASE | {"io", "faces", "models", "infer", "report"},
}
# Entry points that exist to hand over to the CLI.
ENTRY_POINTS = {"facegender.serve.__main__": {"cli"}}
# Parts whose modules must not import torch when they are imported (prediction and serving run
# on ONNX Runtime); torch may still be imported inside functions that train, explain or export.
TORCH_FREE = {"io", "faces", "infer", "serve", "scale", "report", "errors", "labels", "version", "cli",
              "cli_tracks", "__init__", "__main__", "options", "verbs", "lazy"}
TORCH_MODULES = ("torch", "torchvision", "timm", "pytorch_grad_cam", "onnxscript")
TORCH_FREE_MODELS = {"facegender.models.modelfile", "facegender.models.card",
                     "facegender.models.info", "facegender.models", "facegender.models.dlib_format",
                     "facegender.models.pretrained", "facegender.models.archs"}


def modules(pkg: Path) -> dict[str, Path]:
    out = {}
    for f in sorted(pkg.rglob("*.py")):
        parts = list(f.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    if not node.level:
        return node.module or ""
    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
    return ".".join(up + ([node.module] if node.module else []))


def import_graph(pkg: Path) -> dict[str, dict[str, bool]]:
    """module -> {imported package module: imported at module level?}."""
    mods = modules(pkg)
    graph: dict[str, dict[str, bool]] = {}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set(map(id, tree.body))
        for stmt in tree.body:  # imports under `if`/`try` at top level still run on import
            if isinstance(stmt, ast.If | ast.Try):
                top |= {id(s) for s in ast.walk(stmt)}
        edges: dict[str, bool] = {}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, path, node)
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names = [str(node.args[0].value)]  # errors.require("torch") imports torch
            for n in names:
                target = n if n in mods or not n.startswith(pkg.name) else n.rsplit(".", 1)[0]
                if target == mod or mod.startswith(target + "."):
                    continue  # a module importing its own package
                if target in mods or not target.startswith(pkg.name):
                    edges[target] = edges.get(target, False) or id(node) in top
        graph[mod] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, bool]]) -> list[str] | None:
    inner = {m: sorted(t for t in e if t in graph) for m, e in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in inner[m]:
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if not state.get(t):
                found = visit(t, path + [t])
                if found:
                    return found
        state[m] = 2
        return None

    for m in sorted(inner):
        if not state.get(m):
            found = visit(m, [m])
            if found:
                return found
    return None


def part(mod: str) -> str:
    bits = mod.split(".")
    return "__init__" if len(bits) == 1 else bits[1]


def layering_violations(graph: dict[str, dict[str, bool]]) -> list[str]:
    bad = []
    for mod, edges in graph.items():
        mine = part(mod)
        allowed = ENTRY_POINTS.get(mod, ALLOWED.get(mine))
        if allowed is None:
            bad.append(f"{mod}: part '{mine}' has no entry in ALLOWED (and docs/ARCHITECTURE.md)")
            continue
        for target in edges:
            if target in graph and part(target) != mine and part(target) not in allowed:
                bad.append(f"{mod} imports {target}: '{mine}' may import only {sorted(allowed)}")
    return bad


def torch_at_import(graph: dict[str, dict[str, bool]]) -> list[str]:
    bad = []
    for mod, edges in graph.items():
        if part(mod) in TORCH_FREE or mod in TORCH_FREE_MODELS:
            bad += [f"{mod} imports {t} at module level" for t, top in edges.items()
                    if top and t.split(".")[0] in TORCH_MODULES]
    return bad


def test_no_import_cycle():
    assert find_cycle(import_graph(PKG)) is None


def test_dependencies_point_down_the_flow():
    assert layering_violations(import_graph(PKG)) == []


def test_prediction_modules_do_not_import_torch():
    assert torch_at_import(import_graph(PKG)) == []


def test_every_part_is_documented():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    parts = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert parts == set(ALLOWED) - {"errors", "labels", "version", "options", "lazy", "verbs", "cli",
                                    "cli_tracks",
                                    "__init__", "__main__"}
    for p in parts:
        assert f"`{p}/`" in doc, f"docs/ARCHITECTURE.md has no paragraph for {p}/"


def test_every_shipped_detector_model_has_its_licence():
    """weights/detector/: each ONNX is named at the top of a LICENSE file, which states its
    sha256 where it gives one (the tools that convert them write both)."""
    import hashlib

    folder = PKG / "weights" / "detector"
    licences = [p.read_text() for p in folder.glob("LICENSE*")]
    for model in folder.glob("*.onnx"):
        text = next((t for t in licences if t.startswith(model.name)), None)
        assert text is not None and "Apache License" in text, f"{model.name} has no licence file"
        if "ONNX sha256:" in text:
            assert hashlib.sha256(model.read_bytes()).hexdigest() in text, model.name


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A copy of the package's shape with one clean edge, to add faults to."""
    pkg = tmp_path / "facegender"
    for sub in ("io", "infer", "report"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "io" / "images.py").write_text("import numpy\n")
    (pkg / "infer" / "predictor.py").write_text("from ..io.images import numpy\n")
    (pkg / "report" / "evaluate.py").write_text("from ..infer import predictor\n")
    return pkg


def test_checks_catch_a_cycle_an_upward_import_and_torch(toy: Path):
    g = import_graph(toy)
    assert find_cycle(g) is None and layering_violations(g) == [] and torch_at_import(g) == []
    # a cycle through a lazy import still counts
    (toy / "infer" / "backends.py").write_text(
        "def f():\n    from ..report import evaluate\n")
    (toy / "report" / "evaluate.py").write_text("from ..infer import backends\n")
    g = import_graph(toy)
    assert find_cycle(g) == ["facegender.infer.backends", "facegender.report.evaluate",
                             "facegender.infer.backends"]
    assert any("infer.backends imports facegender.report.evaluate" in v
               for v in layering_violations(g))
    (toy / "io" / "images.py").write_text("try:\n    import torch\nexcept ImportError:\n    pass\n")
    assert torch_at_import(import_graph(toy)) == ["facegender.io.images imports torch at module level"]


def test_predicting_a_photo_imports_no_torch():
    code = ("import sys, facegender; r = facegender.predict('examples/group.jpg'); "
            "assert len(r[0].faces) == 4, r; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{TORCH_MODULES!r} or m.startswith('sklearn') or m.startswith('matplotlib')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# benchmarks/ and tools/ stand outside the package: they use its public names only, run
# against the installed package (no sys.path edits), and a tool never imports a benchmark.
OUTSIDE = ("benchmarks", "tools")


def boundary_violations(files: list[Path]) -> list[str]:
    benchmark_names = {f.stem for f in (ROOT / "benchmarks").glob("*.py")}
    out = []
    for f in files:
        where = f"{f.parent.name}/{f.name}"
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and not node.level:
                mod = node.module or ""
                if mod.split(".")[0] == "facegender":
                    private = [p for p in mod.split(".") if p.startswith("_")]
                    private += [a.name for a in node.names if a.name.startswith("_")]
                    out += [f"{where}:{node.lineno} imports the private name {p} from {mod}"
                            for p in private]
                if f.parent.name == "tools" and mod.split(".")[0] in benchmark_names | {"benchmarks"}:
                    out.append(f"{where}:{node.lineno} imports the benchmark {mod}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    top = a.name.split(".")[0]
                    if top == "facegender" and any(p.startswith("_") for p in a.name.split(".")):
                        out.append(f"{where}:{node.lineno} imports the private module {a.name}")
                    if f.parent.name == "tools" and top in benchmark_names | {"benchmarks"}:
                        out.append(f"{where}:{node.lineno} imports the benchmark {a.name}")
            elif (isinstance(node, ast.Attribute) and node.attr == "path"
                  and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                out.append(f"{where}:{node.lineno} edits sys.path")
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                  and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                  and node.value.id in {"facegender", "modelfile"}):
                out.append(f"{where}:{node.lineno} uses the private name {node.attr}")
    return out


def test_benchmarks_and_tools_use_only_public_names():
    files = [f for d in OUTSIDE for f in sorted((ROOT / d).glob("*.py"))]
    assert len(files) > 10
    assert boundary_violations(files) == []


def test_boundary_check_catches_each_fault(tmp_path: Path):
    tools = tmp_path / "tools"
    tools.mkdir()
    faults = {"a.py": "from facegender.infer.export import _parity\n",
              "b.py": "import sys\nsys.path.insert(0, 'x')\n",
              "c.py": "from accuracy import measure\n",
              "d.py": "import facegender.infer._private\n",
              "e.py": "from facegender.infer import export\nexport.run()\n"}
    for name, text in faults.items():
        (tools / name).write_text(text)
    found = boundary_violations(sorted(tools.glob("*.py")))
    assert [v.split(":")[0] for v in found] == ["tools/a.py", "tools/b.py", "tools/c.py", "tools/d.py"]
