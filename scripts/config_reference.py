"""Generate docs/config-reference.md from the stage config schemas (alignpipe.config).

    python scripts/config_reference.py          # rewrite the file
    python scripts/config_reference.py --check  # exit 1 if the committed file is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel

from alignpipe.config import STAGE_CONFIGS

OUT = Path(__file__).resolve().parent.parent / "docs" / "config-reference.md"


def _type(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("alignpipe.config.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("NoneType", "None")
    return text.replace("|", "or")


def _default(field, value=None, has_value=False) -> str:
    if field.is_required() and not has_value:
        return "**required**"
    if not has_value:
        value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(see below)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return "`" + str([v.model_dump() for v in value]) + "`"
    return f"`{value!r}`" if value is not None else "`null`"


def _table(model: type[BaseModel], prefix: str = "", instance: BaseModel | None = None) -> list[str]:
    """Rows for `model`'s fields; nested defaults come from the parent's default `instance`."""
    rows, nested = [], []
    for name, field in model.model_fields.items():
        if name == "stage":
            continue
        ann = field.annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                   None)
        desc = (field.description or (sub.__doc__ or "").strip().split("\n")[0] if sub else field.description or "")
        has = instance is not None
        value = getattr(instance, name) if has else None
        rows.append(f"| `{prefix}{name}` | {_type(ann)} | {_default(field, value, has)} | {desc.replace('|', '/')} |")
        if sub is not None and sub.__name__ != "RewardSpec":
            default = value if has else (None if field.is_required() else field.get_default(call_default_factory=True))
            nested.append((f"{prefix}{name}.", sub, default if isinstance(default, BaseModel) else None))
    for p, sub, inst in nested:
        rows.extend(_table(sub, p, inst))
    return rows


def render() -> str:
    lines = ["# Config reference", "",
             "Generated from `src/alignpipe/config.py` by `scripts/config_reference.py` — do not edit by hand.",
             "Every stage refuses unknown keys. `alignpipe config schema STAGE` prints the JSON schema.", ""]
    for stage, model in STAGE_CONFIGS.items():
        lines += [f"## `{stage}` — {model.__name__}", "", (model.__doc__ or "").strip(), "",
                  "| key | type | default | meaning |", "|---|---|---|---|", *_table(model), ""]
    from alignpipe.config import RewardSpec

    lines += ["## Reward terms (`rewards: [...]`)", "", "| key | type | default | meaning |", "|---|---|---|---|",
              *_table(RewardSpec), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/config_reference.py", file=sys.stderr)
            sys.exit(1)
    else:
        OUT.write_text(text)
        print(f"wrote {OUT}")
