"""The layer contract (docs/architecture.md, "Layers"): every import of `detect` and `backbones`, at module
level or inside a function, goes down or sideways within its own layer, never up.

Bottom-up: utils < data < proposals, models < evaluation < engine < report < commands. `backbones` sits
below all of `detect` and never imports it. The modules at the root of `detect` (errors, config, boxes)
are generic and sit in the bottom layer with `detect.utils`; `detect.utils` itself imports nothing of
`detect` but `detect.errors`. proposals and models are siblings: neither imports the other.
Inside function bodies only the command line (detect/cli.py, detect/commands/) may import `detect` or
`backbones`, to load a subcommand's dependencies when it is chosen.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (layer name, module prefixes), bottom-up. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("backbones", ("backbones",)),
    ("utils", ("detect", "detect.errors", "detect.config", "detect.boxes", "detect.utils")),
    ("data", ("detect.data",)),
    ("proposals/models", ("detect.proposals", "detect.models")),
    ("evaluation", ("detect.evaluation",)),
    ("engine", ("detect.engine",)),
    ("report", ("detect.report",)),
    ("commands", ("detect.commands", "detect.cli", "detect.__main__")),
]
SIBLINGS = ("detect.proposals", "detect.models")  # one layer, independent of each other
UTILS_MAY_IMPORT = ("detect.utils", "detect.errors")
LAZY_ALLOWED = ("detect.cli", "detect.commands")  # subcommand modules load their dependencies when chosen
# The package's public names, loaded on first use by detect/__init__.py's module __getattr__ (PEP 562):
# `from detect import Predictor` without every `import detect` paying for torch and the models.
PUBLIC_API = {"detect": ("detect.engine.predictor",)}


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> tuple[int, str, str] | None:
    """(rank, layer name, matching prefix) of a project module; None for third-party modules."""
    best = None
    for rank, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if _matches(module, prefix) and (best is None or len(prefix) > len(best[2])):
                best = (rank, name, prefix)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> list[Path]:
    return sorted(p for package in ("detect", "backbones") for p in (ROOT / package).rglob("*.py"))


def imports(path: Path):
    """(line, imported module, inside a function) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against this module's package
                    anchor = package[:len(package) - (child.level - 1)]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                # `from detect.engine import checkpoint` imports the module detect.engine.checkpoint
                for alias in child.names:
                    found.append((child.lineno, f"{base}.{alias.name}" if alias.name != "*" else base, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def target_module(imported: str) -> str:
    """`detect.data.voc.read_voc` -> the deepest existing module, `detect.data.voc`."""
    parts = imported.split(".")
    while parts:
        candidate = ROOT.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return imported


def violations(paths=None) -> list[str]:
    problems = []
    for path in paths or project_files():
        importer = module_name(path)
        source = layer_of(importer)
        rel = path.relative_to(ROOT)
        if source is None:
            problems.append(f"{rel}: module {importer} belongs to no layer; add its package to LAYERS "
                            "(tests/test_layers.py) and to docs/architecture.md")
            continue
        seen = set()
        for line, imported, in_function in imports(path):
            target = layer_of(imported)
            module = target_module(imported)
            if target is None or (line, module) in seen:  # third-party, or a second name of the same import
                continue
            seen.add((line, module))
            if in_function and module in PUBLIC_API.get(importer, ()):
                continue
            where = f"{rel}:{line}: {importer} ({source[1]})"
            what = f"{module} ({target[1]})"
            if target[0] > source[0]:
                problems.append(f"{where} imports {what}: an upward import, from layer {source[1]!r} up to "
                                f"layer {target[1]!r}")
            elif source[0] == target[0] and source[2] in SIBLINGS and target[2] in SIBLINGS and source[2] != target[2]:
                problems.append(f"{where} imports {what}: {source[2]} and {target[2]} are siblings that do not "
                                "import each other")
            elif _matches(importer, "detect.utils") and not any(_matches(module, p) for p in UTILS_MAY_IMPORT):
                problems.append(f"{where} imports {what}: detect.utils imports nothing of detect but detect.errors")
            elif in_function and not any(_matches(importer, p) for p in LAZY_ALLOWED):
                problems.append(f"{where} imports {what} inside a function: project imports belong at module top "
                                "(only detect/cli.py and detect/commands/ load lazily)")
    return problems


def test_every_import_goes_down_the_layers():
    problems = violations()
    assert not problems, "layer contract broken (docs/architecture.md, Layers):\n" + "\n".join(problems)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: an upward import (data -> engine) and a lazy one are reported with file and line."""
    package = tmp_path / "detect" / "data"
    package.mkdir(parents=True)
    (tmp_path / "detect" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "bad.py").write_text("import os\n\nfrom detect.engine import device\n\n\n"
                                    "def f():\n    from detect.errors import UserError\n")
    (tmp_path / "detect" / "engine").mkdir()
    (tmp_path / "detect" / "engine" / "__init__.py").write_text("")
    (tmp_path / "detect" / "engine" / "device.py").write_text("")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    problems = violations([package / "bad.py"])
    assert len(problems) == 2, problems
    assert problems[0].startswith("detect/data/bad.py:3: detect.data.bad (data) imports detect.engine.device")
    assert "from layer 'data' up to layer 'engine'" in problems[0]
    assert problems[1].startswith("detect/data/bad.py:7:") and "inside a function" in problems[1]

