"""Generate docs/environment.md from the settings table (alignpipe.settings).

    python scripts/env_reference.py          # rewrite the file
    python scripts/env_reference.py --check  # exit 1 if the committed file is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from alignpipe.settings import GROUPS, VARIABLES

OUT = Path(__file__).resolve().parent.parent / "docs" / "environment.md"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _type(annotation: str) -> str:
    return annotation.replace(" | ", " or ")


def render() -> str:
    lines = ["# Environment reference", "",
             "Generated from `src/alignpipe/settings.py` by `scripts/env_reference.py` — do not edit by hand.",
             "Every variable is read when it is used (a pod's env or a test's monkeypatch wins); unset or blank "
             "means the default. A malformed value stops the command with one line naming the variable and the "
             "fix (exit code 2). \"mlflow/boto3/kfp too\" marks variables those libraries read themselves; "
             "\"only\" marks ones alignpipe documents (and may set) but never reads.", ""]
    for group, title in GROUPS.items():
        rows = [v for v in VARIABLES if v.group == group]
        lines += [f"## {title}", "", "| variable | type | default | read by | meaning |", "|---|---|---|---|---|"]
        lines += [f"| `{v.name}` | {_type(v.type)} | {_cell(v.default)} | {_cell(v.read_by)} | {_cell(v.description)} |"
                  for v in rows]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/env_reference.py", file=sys.stderr)
            sys.exit(1)
    else:
        OUT.write_text(text)
        print(f"wrote {OUT}")
