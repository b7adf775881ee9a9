"""The dependency direction of the package, checked from the source (function-level imports included).

Layers, lowest first; a module may import its own layer or lower ones, never a higher one, and the
module graph has no cycle:

    base (leaf) -> config/settings/platform -> storage -> data/models/rewards/tracking/report/...
    -> stages -> launch -> steps -> components -> pipelines -> runs -> cli
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package prefix -> source folder
SOURCES = {"alignpipe": ROOT / "src" / "alignpipe", "alignpipe.components": ROOT / "components",
           "alignpipe.pipelines": ROOT / "pipelines"}

#: Module (or package prefix) -> layer. The longest matching prefix wins.
LAYERS: dict[str, int] = {
    "alignpipe.base": 0,
    "alignpipe": 0,  # the package's __init__
    "alignpipe.config": 1, "alignpipe.settings": 1, "alignpipe.platform": 1, "alignpipe.presets": 1,
    "alignpipe.storage": 2,
    "alignpipe.data": 3, "alignpipe.models": 3, "alignpipe.rewards": 3, "alignpipe.tracking": 3,
    "alignpipe.report": 3, "alignpipe.sandbox": 3, "alignpipe.evaluation": 3, "alignpipe.distributed": 3,
    "alignpipe.registry": 3, "alignpipe.reuse": 3, "alignpipe.checkpoints": 3,
    "alignpipe.sampling": 3, "alignpipe.serving": 3,
    "alignpipe.rl": 4, "alignpipe.stages": 4, "alignpipe.mixture": 4,
    "alignpipe.trainjob": 5, "alignpipe.launch": 5,
    "alignpipe.steps": 6, "alignpipe.rl_stages": 6,
    "alignpipe.components": 7,
    "alignpipe.pipelines": 8,
    "alignpipe.runs": 9, "alignpipe.forkserver": 9,
    "alignpipe.cli": 10,
}
LAYER_NAMES = {0: "base", 1: "config/settings", 2: "storage", 3: "data/models/rewards/tracking", 4: "stages",
               5: "launch", 6: "steps", 7: "components", 8: "pipelines", 9: "runs", 10: "cli"}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "alignpipe" and parts and parts[0] in ("components", "pipelines"):
                continue
            out[name] = path
    return out


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _resolve(name: str, known: set[str]) -> str | None:
    """The known module an import refers to (`alignpipe.x.y` may name a module or a symbol in one)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """alignpipe modules imported anywhere in `path` (module level and inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for n in names:
            if n == "alignpipe" or n.startswith("alignpipe."):
                target = _resolve(n, known)
                if target and target != module:
                    out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: imports(m, p, known) for m, p in mods.items()}


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _importers_of_parent(g: dict[str, set[str]]) -> dict[str, set[str]]:
    # A package's __init__ importing its own submodules is not a dependency problem.
    return {m: {t for t in ts if not (t.startswith(m + ".") )} for m, ts in g.items()}


def test_every_module_has_a_layer() -> None:
    unknown = [m for m in graph() if max((p for p in LAYERS if m == p or m.startswith(p + ".")), key=len) == "alignpipe"
               and m != "alignpipe"]
    assert not unknown, f"modules without a layer in tests/test_architecture.py LAYERS: {unknown}"


def test_no_import_cycles() -> None:
    g = _importers_of_parent(graph())
    # Edges from a package to its own submodules and back are one unit; cycles are between modules.
    cycles = _cycles(g)
    assert not cycles, "import cycles (function-level imports count): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_imports_follow_the_layer_direction() -> None:
    bad = []
    for m, targets in graph().items():
        for t in sorted(targets):
            if layer(t) > layer(m):
                bad.append(f"{m} ({LAYER_NAMES[layer(m)]}) imports {t} ({LAYER_NAMES[layer(t)]})")
    assert not bad, "imports against the dependency direction:\n" + "\n".join(bad)


def test_base_is_a_leaf() -> None:
    assert graph()["alignpipe.base"] == set()


LIGHT_COMMANDS = [
    ["--help"],
    ["config", "schema", "sft"],
    ["params", "rlvr"],
    ["data", "validate", "{demo}", "--kind", "prompts"],
    ["compile", "--out", "{tmp}"],
]


@pytest.mark.parametrize("argv", LIGHT_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_commands_that_train_nothing_import_no_ml_library(argv: list[str], tmp_path: Path) -> None:
    """`alignpipe --help`, `config schema`, `params`, `data validate`, `compile` (and submit/upload, which
    share compile's imports) must not import torch, transformers or trl: they start in well under a second."""
    demo = tmp_path / "prompts.jsonl"
    demo.write_text('{"prompt": "2+2=", "answer": "4"}\n')
    argv = [a.format(demo=demo, tmp=tmp_path / "out") for a in argv]
    code = (
        "import sys\n"
        "from alignpipe import cli\n"
        "try:\n"
        f"    rc = cli.main({argv!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'accelerate', 'deepspeed') "
        "if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
        "sys.exit(rc or 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    heavy = proc.stdout.strip().splitlines()[-1].removeprefix("HEAVY=")
    assert heavy == "", f"`alignpipe {' '.join(argv)}` imported {heavy}"


def test_submit_and_upload_share_compile_imports() -> None:
    """submit/upload go through the same pipeline build as compile plus kfp.Client: check kfp's client
    and the module that implements them import nothing heavy."""
    code = ("import sys\nimport kfp\nfrom alignpipe import runs\nfrom alignpipe.pipelines import PIPELINES\n"
            "[runs.load(n) for n in PIPELINES]\n"
            "print(','.join(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ""


if __name__ == "__main__":  # print the module graph (used in the closing note)
    g = graph()
    for m in sorted(g):
        print(f"{m} [{LAYER_NAMES[layer(m)]}] -> {', '.join(sorted(g[m])) or '-'}")
    print("cycles:", _cycles(_importers_of_parent(g)))
