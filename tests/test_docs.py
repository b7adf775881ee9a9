"""The docs match the code: generated files are fresh, every link and every named repository file exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: First segments of repository paths: a backticked `x/y` whose first segment is one of these names a file
#: of this repository (paths under out/, .venv/, WORKDIR/ ... are run-time outputs, not checked).
REPO_ROOTS = {"src", "tests", "docs", "scripts", "helm", "manifests", "components", "pipelines", "configs",
              "bench", "mk"}
REPO_FILES = {"Makefile", "pyproject.toml", "README.md"}
#: Generators whose output is committed; more are found from the "Generated ... by scripts/x.py" lines.
GENERATORS = {"scripts/config_reference.py", "scripts/pipeline_graphs.py"}

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<a\s+href=\"([^\"]+)\"")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
GENERATED_BY = re.compile(r"[Gg]enerated\b[^\n]*?\b(scripts/[\w-]+\.py)")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    return [a or b for a, b in LINK.findall(text)]


def named_paths(path: Path) -> list[str]:
    """Repository paths named in backticks (outside code blocks), e.g. `src/alignpipe/config.py`."""
    text = FENCE.sub("", path.read_text())
    out = []
    for span in CODE_SPAN.findall(text):
        token = span.strip()
        if " " in token or any(c in token for c in "<>*{}…$=:") or "..." in token:
            continue
        first = token.split("/", 1)[0]
        if token in REPO_FILES or (first in REPO_ROOTS and "/" in token):
            out.append(token)
    return out


def test_docs_exist():
    names = {p.name for p in DOCS}
    for doc in ("stages-and-data.md", "rewards-and-algorithms.md", "pipelines.md", "storage-and-tracking.md",
                "cluster-install.md", "development.md", "config-reference.md"):
        assert doc in names, f"docs/{doc} is missing"


def test_readme_is_short_and_mentions_the_two_commands_and_every_stage():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 280, "README.md grew past ~270 lines (with the measured tables the issues ask for): move the detail into docs/"
    assert "make demo" in readme and "make test" in readme
    for stage in ("sft", "reward_model", "rl", "preference", "evaluate", "register"):
        assert f"alignpipe stage {stage}" in readme


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target} (no such file: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {_rel(dest)})")
    assert not broken, f"{_rel(doc)}: broken links:\n  " + "\n  ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_named_repository_paths_exist(doc: Path):
    missing = sorted({p for p in named_paths(doc) if not (ROOT / p.rstrip("/")).exists()})
    assert not missing, f"{_rel(doc)} names files that do not exist: {', '.join(missing)}"


def test_path_and_link_finders():
    sample = ROOT / "tests" / "_docs_sample.md"
    try:
        sample.write_text("# T\n\nSee [a](docs/x.md#y), ![img](i.png), <a href=\"b.md\">b</a>, "
                          "`src/alignpipe/config.py`, `WORKDIR/kfp/`, `tests/<x>.py`, `out/demo/summary.json`, "
                          "`Makefile`, `helm/alignpipe/values.yaml`.\n\n```\n[c](ignored.md) `src/nope.py`\n```\n")
        assert links(sample) == ["docs/x.md#y", "b.md"]
        assert named_paths(sample) == ["src/alignpipe/config.py", "Makefile", "helm/alignpipe/values.yaml"]
    finally:
        sample.unlink(missing_ok=True)
    assert _slug("The MinIO of Kubeflow Pipelines instead of the chart's") == \
        "the-minio-of-kubeflow-pipelines-instead-of-the-charts"
    assert _slug("`sft` — SFTConfig") == "sft--sftconfig"


def _generators() -> list[str]:
    found = set(GENERATORS)
    for doc in [*DOCS, ROOT / "helm" / "alignpipe" / "README.md"]:
        if doc.is_file():
            found.update(GENERATED_BY.findall(doc.read_text()))
    return sorted(found)


@pytest.mark.parametrize("script", _generators())
def test_generated_files_are_current(script: str):
    assert (ROOT / script).is_file(), f"{script} is named as a generator but does not exist"
    proc = subprocess.run([sys.executable, str(ROOT / script), "--check"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, f"{script} --check: {proc.stdout}{proc.stderr}"
