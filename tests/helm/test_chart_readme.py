"""helm/alignpipe/README.md is generated from README.md.tmpl and the `# --` comments of values.yaml
(scripts/chart_readme.py), and every key of values.yaml has such a comment."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import yaml

from helmtools import CHART, ROOT

_spec = importlib.util.spec_from_file_location("chart_readme", ROOT / "scripts" / "chart_readme.py")
chart_readme = importlib.util.module_from_spec(_spec)
sys.modules["chart_readme"] = chart_readme  # dataclasses look their module up there
_spec.loader.exec_module(chart_readme)

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def test_chart_readme_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart_readme.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_values_key_is_documented():
    rows, problems = chart_readme.collect((CHART / "values.yaml").read_text(), SCHEMA)
    assert not problems
    keys = {r.key for r in rows}
    assert {"image.tag", "minio.enabled", "externalS3.endpoint", "pipelines.gpu.tolerations"} <= keys
    assert all(r.description for r in rows)


def test_a_key_without_a_comment_is_refused():
    text = (CHART / "values.yaml").read_text().replace("  # -- Image pull policy\n  pullPolicy: IfNotPresent\n",
                                                       "  pullPolicy: IfNotPresent\n", 1)
    _, problems = chart_readme.collect(text, SCHEMA)
    assert len(problems) == 1 and problems[0].startswith("image.pullPolicy ")
    _, problems = chart_readme.collect(text + "# -- not in the schema\nextraThing: 1\n", SCHEMA)
    assert "extraThing: not in values.schema.json" in problems


def test_readme_rows_carry_types_defaults_and_free_form_maps():
    text = (CHART / "README.md").read_text()
    assert "helm install alignpipe helm/alignpipe" in text
    assert "| `mlflow.service.port` | int | `5000` | Service port |" in text
    assert "| `minio.enabled` | bool | `true` |" in text
    # a free-form map is one row with its entries as the default; its entries need no comment
    assert '| `pipelines.podLabels` | object | `{"pipelines.kubeflow.org/v2_component":"true"}` |' in text
    # every leaf of values.yaml appears as a row
    def leaves(d, p=""):
        for k, v in d.items():
            if isinstance(v, dict) and v and k != "podLabels":
                yield from leaves(v, f"{p}{k}.")
            else:
                yield p + k
    for key in leaves(yaml.safe_load((CHART / "values.yaml").read_text())):
        assert f"| `{key}` |" in text, key
