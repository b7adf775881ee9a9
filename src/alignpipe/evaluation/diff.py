"""How far, and in which directions, did training move a model: a weight-space diff of two checkpoints.

    >>> from alignpipe.evaluation import diff
    >>> d = diff.diff_models("out/demo/sft", "models:/alignpipe-demo@champion")
    >>> diff.write(d, "out/diff")          # diff.json + diff.html (self-contained)

(`alignpipe diff MODEL_A MODEL_B` is the CLI's wrapper.) A model is a local folder written by
``save_pretrained`` (safetensors), an ``s3://`` published folder, ``tiny`` / ``tiny:SEED``, or a registered
version ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` — resolved by :mod:`alignpipe.models` and
:mod:`alignpipe.registry`, exactly as the stages and ``alignpipe model pull`` resolve them. Nothing is
downloaded from a hub.

For every tensor present in both models with the same shape (read one pair at a time, upcast to float32),
with Δ = B − A:

- ``rel_norm`` = ‖Δ‖_F / ‖A‖_F (``null`` when A is all zeros and Δ is not);
- ``changed`` / ``changed_fraction``: the number / share of entries with |Δ| > ``tolerance`` (absolute,
  default :data:`DEFAULT_TOLERANCE` = 1e-5; 0 means any change at all). This is the issue's "update
  sparsity": 0 for identical models; the sparsity of the update in the sense of the RL-sparsity papers
  (share of weights *not* updated) is 1 − ``changed_fraction``. A bf16 checkpoint cannot store a change
  smaller than half a bf16 step of the weight (about 0.4% of it), so there any stored change counts;
- for 2-D weights: ``delta_singular_values``, the top ``top_k`` singular values of Δ, and
  ``delta_stable_rank`` = ‖Δ‖_F² / σ₁(Δ)² (1 for a rank-1 update);
- the "off-principal" diagnostic: ``principal_share_left`` = ‖U_rᵀ Δ‖_F² / ‖Δ‖_F² and
  ``principal_share_right`` = ‖Δ V_r‖_F² / ‖Δ‖_F², the share of the update's energy inside the span of
  A's top-``rank`` left / right singular vectors, next to ``random_share_left`` = r/rows and
  ``random_share_right`` = r/cols, the expected share of a random Δ. A share near the random one means
  the update avoids A's principal directions; a share far above it means it works along them;
- ``sigma_drift``: σ_i(B)/σ_i(A) − 1 for A's top ``top_k`` singular values (how much the principal
  spectrum itself moved).

Tensors are grouped by transformer block (``...layers.N...``, ``h.N``, ``blocks.N``; everything else is
``other``) and overall: norms add in quadrature (``rel_norm`` of a group = ‖Δ‖ / ‖A‖ over all its entries),
counts add up, and the principal shares (and their random baselines) are averaged weighted by ‖Δ‖_F².
Singular values come from an exact SVD up to :data:`EXACT_SVD_MAX_DIM` rows/columns and a randomized one
(``torch.svd_lowrank``, top values to a few digits) above it.

LoRA: alignpipe's stages save merged weights, so their outputs compare directly. A bare PEFT adapter folder
(``adapter_config.json`` without ``config.json``) is merged into its base model (``base_model_name_or_path``,
which must be local, ``s3://`` or ``tiny``) in a temporary folder first, so merged weights are compared too.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignpipe import models, storage
from alignpipe.base import UserError

__all__ = ["DEFAULT_RANK", "DEFAULT_TOLERANCE", "DEFAULT_TOP_K", "DiffError", "diff_models", "locate",
           "render_html", "write"]

#: |Δ| above this (absolute) counts an entry as changed.
DEFAULT_TOLERANCE = 1e-5
#: Singular values of Δ (and of A, for the drift) reported per 2-D tensor.
DEFAULT_TOP_K = 8
#: Dimension r of A's principal subspace in the off-principal diagnostic.
DEFAULT_RANK = 8
#: Larger matrices (min(rows, cols) above this) use a randomized SVD.
EXACT_SVD_MAX_DIM = 1024

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")


class DiffError(UserError, ValueError):
    """A model that cannot be diffed (missing, incomplete, an adapter, nothing in common)."""


@dataclass
class ModelDiff:
    """The result of :func:`diff_models`; ``to_dict()`` is what ``diff.json`` holds."""

    model_a: dict[str, str]
    model_b: dict[str, str]
    settings: dict[str, Any]
    tensors: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    overall: dict[str, Any] = field(default_factory=dict)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("model_a", "model_b", "settings", "overall", "layers", "tensors",
                                              "only_in_a", "only_in_b", "shape_mismatch", "notes")}


# ------------------------------------------------------------------------------------------- locate


def locate(uri: str, tracking_uri: str | None = None, scratch: list[Path] | None = None) -> tuple[Path, str]:
    """A local folder holding the model ``uri`` and a description of where it came from. A registered version
    whose source is not an ``s3://`` folder is pulled into a temporary folder, appended to ``scratch`` (the
    caller removes it)."""
    uri = str(uri)
    if uri.startswith("models:/"):
        from alignpipe import registry

        with registry._bounded_http():
            mv, _ = registry.resolve(uri, tracking_uri)
        source = str(mv.source)
        where = f"{uri} = version {mv.version}, {source}"
        if storage.is_remote(source):  # a published folder: fetched, verified and cached like any s3:// model
            return Path(models.resolve(source)), where
        tmp = Path(tempfile.mkdtemp(prefix="alignpipe-diff-"))
        if scratch is not None:
            scratch.append(tmp)
        got = registry.pull_model(uri, tmp / "model", tracking_uri=tracking_uri)
        return got.path, where
    p = Path(uri).expanduser()
    if not storage.is_remote(uri) and p.is_dir() and (p / "adapter_config.json").is_file() \
            and not (p / "config.json").is_file():
        return _merged_adapter(p, scratch)
    got = models.resolve(uri)
    if not Path(got).is_dir():
        raise DiffError(f"{uri}: not a local model folder, s3:// folder, tiny[:SEED] or models:/NAME@ALIAS "
                        "(diff downloads nothing from a hub — download the model first)")
    return Path(got), uri


def _merged_adapter(adapter: Path, scratch: list[Path] | None) -> tuple[Path, str]:
    """A PEFT (LoRA) adapter folder merged into its base model (``base_model_name_or_path``, a local folder,
    ``s3://`` or ``tiny``), saved in a temporary folder appended to ``scratch``."""
    try:
        base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise DiffError(f"{adapter}/adapter_config.json: unreadable ({e}) — is this a PEFT adapter folder?") from None
    if not base:
        raise DiffError(f"{adapter}: a LoRA adapter whose adapter_config.json names no base_model_name_or_path — "
                        "merge it first (peft `merge_and_unload()` then `save_pretrained`)")
    base_dir = models.resolve(str(base))
    if not Path(base_dir).is_dir():
        raise DiffError(f"{adapter}: the adapter's base model {base} is not a local folder (diff downloads nothing "
                        "from a hub) — download it, or merge the adapter first")
    from peft import PeftModel

    model, tok = models.load_policy(base_dir, precision="fp32")
    merged = PeftModel.from_pretrained(model, str(adapter))
    tmp = Path(tempfile.mkdtemp(prefix="alignpipe-diff-"))
    if scratch is not None:
        scratch.append(tmp)
    models.save(merged, tok, tmp / "model")
    return tmp / "model", f"{adapter} (LoRA adapter merged into {base})"


def _index(folder: Path) -> dict[str, Path]:
    """tensor name -> the safetensors file holding it."""
    from safetensors import safe_open

    out: dict[str, Path] = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                out[k] = f
    if not out:
        raise DiffError(f"{folder}: no *.safetensors weights — diff reads safetensors checkpoints only")
    return out


def _shape(path: Path, name: str) -> tuple[int, ...]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as h:
        return tuple(h.get_slice(name).get_shape())


def _load(path: Path, name: str):
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as h:
        return h.get_tensor(name).to(torch.float32)


# ------------------------------------------------------------------------------------------ numbers


def layer_of(name: str) -> str:
    """The transformer block a parameter belongs to (``"3"``), or ``"other"``."""
    m = _LAYER.search(name)
    return m.group(1) if m else "other"


def _svd(x, k: int, vectors: bool):
    """Top-k singular values (and vectors) of x: exact for small matrices, randomized for large ones."""
    import torch

    if min(x.shape) <= EXACT_SVD_MAX_DIM:
        if vectors:
            u, s, vh = torch.linalg.svd(x, full_matrices=False)
            return u[:, :k], s[:k], vh[:k].T
        return None, torch.linalg.svdvals(x)[:k], None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        u, s, v = torch.svd_lowrank(x, q=min(min(x.shape), k + 10), niter=4)
    return u[:, :k], s[:k], v[:, :k]


def _matrix_stats(a, b, d, d_sq: float, top_k: int, rank: int) -> dict[str, Any]:
    import torch

    rows, cols = a.shape
    k, r = min(top_k, rows, cols), min(rank, rows, cols)
    out: dict[str, Any] = {"random_share_left": r / rows, "random_share_right": r / cols}
    if d_sq == 0.0:  # B == A: nothing to decompose
        out.update(delta_singular_values=[0.0] * k, delta_stable_rank=None, principal_share_left=None,
                   principal_share_right=None, sigma_drift=[0.0] * k)
        return out
    u, s_a, v = _svd(a, max(k, r), vectors=True)
    _, s_b, _ = _svd(b, k, vectors=False)
    _, s_d, _ = _svd(d, k, vectors=False)
    ur, vr = u[:, :r], v[:, :r]
    left = float(torch.linalg.vector_norm(ur.T @ d, dtype=torch.float64) ** 2) / d_sq
    right = float(torch.linalg.vector_norm(d @ vr, dtype=torch.float64) ** 2) / d_sq
    s1 = float(s_d[0])
    drift = [(float(sb) / float(sa) - 1.0) if float(sa) > 0 else None for sa, sb in zip(s_a[:k], s_b[:k])]
    out.update(delta_singular_values=[float(x) for x in s_d], delta_stable_rank=d_sq / (s1 * s1) if s1 > 0 else None,
               principal_share_left=min(1.0, left), principal_share_right=min(1.0, right), sigma_drift=drift)
    return out


def _tensor_stats(name: str, a, b, tolerance: float, top_k: int, rank: int) -> dict[str, Any]:
    import torch

    d = b - a
    a_sq = float(torch.linalg.vector_norm(a, dtype=torch.float64) ** 2)
    d_sq = float(torch.linalg.vector_norm(d, dtype=torch.float64) ** 2)
    changed = int((d.abs() > tolerance).sum())
    numel = d.numel()
    rel = math.sqrt(d_sq / a_sq) if a_sq > 0 else (0.0 if d_sq == 0 else None)
    row: dict[str, Any] = {"name": name, "layer": layer_of(name), "shape": list(a.shape), "numel": numel,
                           "a_norm": math.sqrt(a_sq), "delta_norm": math.sqrt(d_sq), "rel_norm": rel,
                           "max_abs_delta": float(d.abs().max()) if numel else 0.0,
                           "changed": changed, "changed_fraction": changed / numel if numel else 0.0}
    if a.dim() == 2 and min(a.shape) >= 2:
        row.update(_matrix_stats(a, b, d, d_sq, top_k, rank))
    return row


def _aggregate(label: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    a_sq = sum(r["a_norm"] ** 2 for r in rows)
    d_sq = sum(r["delta_norm"] ** 2 for r in rows)
    numel = sum(r["numel"] for r in rows)
    changed = sum(r["changed"] for r in rows)
    out: dict[str, Any] = {"layer": label, "tensors": len(rows), "numel": numel,
                           "a_norm": math.sqrt(a_sq), "delta_norm": math.sqrt(d_sq),
                           "rel_norm": math.sqrt(d_sq / a_sq) if a_sq > 0 else (0.0 if d_sq == 0 else None),
                           "changed": changed, "changed_fraction": changed / numel if numel else 0.0}
    mats = [r for r in rows if r.get("principal_share_left") is not None]
    w = sum(r["delta_norm"] ** 2 for r in mats)
    for side in ("left", "right"):
        for kind in ("principal", "random"):
            key = f"{kind}_share_{side}"
            out[key] = sum(r[key] * r["delta_norm"] ** 2 for r in mats) / w if w > 0 else None
    drifts = [abs(x) for r in rows for x in (r.get("sigma_drift") or [])[:1] if x is not None]
    out["max_abs_sigma1_drift"] = max(drifts) if drifts else None
    moved = [r for r in rows if r["rel_norm"]]
    out["most_changed"] = max(moved, key=lambda r: r["rel_norm"])["name"] if moved else None
    return out


def diff_models(model_a: str, model_b: str, *, tolerance: float = DEFAULT_TOLERANCE, top_k: int = DEFAULT_TOP_K,
                rank: int = DEFAULT_RANK, tracking_uri: str | None = None) -> ModelDiff:
    """Compare every tensor the two models share (see the module doc for what is computed)."""
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise DiffError(f"tolerance {tolerance!r} must be a finite number >= 0 (default {DEFAULT_TOLERANCE:g})")
    if top_k < 1 or rank < 1:
        raise DiffError(f"top_k ({top_k}) and rank ({rank}) must be at least 1")
    scratch: list[Path] = []
    try:
        return _diff(model_a, model_b, tolerance, top_k, rank, tracking_uri, scratch)
    finally:
        for d in scratch:
            shutil.rmtree(d, ignore_errors=True)


def _diff(model_a: str, model_b: str, tolerance: float, top_k: int, rank: int, tracking_uri: str | None,
          scratch: list[Path]) -> ModelDiff:
    import torch

    path_a, where_a = locate(model_a, tracking_uri, scratch)
    path_b, where_b = locate(model_b, tracking_uri, scratch)
    idx_a, idx_b = _index(path_a), _index(path_b)
    res = ModelDiff(model_a={"uri": str(model_a), "path": str(path_a), "source": where_a},
                    model_b={"uri": str(model_b), "path": str(path_b), "source": where_b},
                    settings={"tolerance": tolerance, "tolerance_kind": "absolute", "top_k": top_k, "rank": rank,
                              "exact_svd_max_dim": EXACT_SVD_MAX_DIM, "dtype": "float32"})
    res.only_in_a = sorted(set(idx_a) - set(idx_b))
    res.only_in_b = sorted(set(idx_b) - set(idx_a))
    with torch.no_grad():
        for name in sorted(set(idx_a) & set(idx_b)):
            sa, sb = _shape(idx_a[name], name), _shape(idx_b[name], name)
            if sa != sb:
                res.shape_mismatch.append({"name": name, "shape_a": list(sa), "shape_b": list(sb)})
                continue
            res.tensors.append(_tensor_stats(name, _load(idx_a[name], name), _load(idx_b[name], name),
                                             tolerance, top_k, rank))
    if not res.tensors:
        raise DiffError(f"{model_a} and {model_b} share no tensor of the same name and shape — are they the same "
                        "architecture?")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in res.tensors:
        groups.setdefault(r["layer"], []).append(r)
    order = sorted((g for g in groups if g != "other"), key=int) + (["other"] if "other" in groups else [])
    res.layers = [_aggregate(g, groups[g]) for g in order]
    res.overall = _aggregate("all", res.tensors)
    if res.only_in_a or res.only_in_b:
        res.notes.append(f"{len(res.only_in_a)} tensors only in A, {len(res.only_in_b)} only in B (not compared; "
                         "tied embeddings are stored once)")
    if res.shape_mismatch:
        res.notes.append(f"{len(res.shape_mismatch)} tensors differ in shape (not compared), e.g. a resized "
                         "vocabulary")
    return res


# ------------------------------------------------------------------------------------------- output


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _svg_layer_bars(labels: list[str], series: list[tuple[str, list[float | None], str]], title: str,
                    width: int = 460, height: int = 210) -> str:
    """Grouped bars per layer (one colour per series), y axis from 0 to the largest value."""
    pad_l, pad_r, pad_t, pad_b = 56, 10, 26, 44
    vals = [v for _, vs, _ in series for v in vs if v is not None and math.isfinite(v)]
    top = max(vals, default=0.0) or 1.0
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    gw = w / max(1, len(labels))
    bw = gw * 0.8 / max(1, len(series))
    parts = [f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" class="ax"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" class="ax"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end">{top:.3g}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + h}" text-anchor="end">0</text>']
    for i, lab in enumerate(labels):
        x0 = pad_l + i * gw + gw * 0.1
        for j, (_, vs, colour) in enumerate(series):
            v = vs[i]
            if v is None or not math.isfinite(v):
                continue
            bh = max(0.0, v) / top * h
            parts.append(f'<rect x="{x0 + j * bw:.1f}" y="{pad_t + h - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" '
                         f'fill="{colour}"><title>{html.escape(lab)}: {v:.4g}</title></rect>')
        parts.append(f'<text x="{x0 + gw * 0.4:.1f}" y="{pad_t + h + 14}" text-anchor="middle">'
                     f'{html.escape(lab)}</text>')
    for j, (name, _, colour) in enumerate(series):
        x = pad_l + j * 150
        parts.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="{height - 5}">{html.escape(name)}</text>')
    t = html.escape(title)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{t}">'
            f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="t">{t}</text>{"".join(parts)}</svg>')


_GROUP_COLS = [("layer", "layer"), ("tensors", "tensors"), ("rel_norm", "‖Δ‖/‖A‖"), ("changed_fraction", "changed"),
               ("principal_share_left", "top-r share (left)"), ("random_share_left", "random (left)"),
               ("principal_share_right", "top-r share (right)"), ("random_share_right", "random (right)"),
               ("max_abs_sigma1_drift", "max |σ₁ drift|"), ("most_changed", "most changed tensor")]


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_f(r.get(k)))}</td>" for k, _ in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(d: ModelDiff) -> str:
    """A self-contained page (inline CSS and SVG; no scripts, fonts or links)."""
    from alignpipe.report import _CSS

    s = d.settings
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>alignpipe diff</title>"
             f"<style>{_CSS}</style></head><body><h1>alignpipe diff</h1>",
             f"<p>A = <code>{html.escape(d.model_a['source'])}</code><br>B = <code>"
             f"{html.escape(d.model_b['source'])}</code></p>",
             f"<p>Δ = B − A. Changed: |Δ| &gt; {s['tolerance']:g} (absolute). Top-r share: the share of ‖Δ‖²"
             f" inside the span of A's top {s['rank']} singular vectors; random: what a random Δ would have (r/d)."
             f" σ drift: σᵢ(B)/σᵢ(A) − 1.</p>",
             "<h2>Overall</h2>" + _table([d.overall], _GROUP_COLS),
             "<h2>Per layer</h2>"]
    labels = [f"L{g['layer']}" if g["layer"] != "other" else "other" for g in d.layers]
    parts.append("<div>" + _svg_layer_bars(labels, [("‖Δ‖/‖A‖", [g["rel_norm"] for g in d.layers], "#1f6fb4")],
                                           "relative update norm by layer")
                 + _svg_layer_bars(labels, [("changed share", [g["changed_fraction"] for g in d.layers], "#d9822b")],
                                   "share of weights changed by layer")
                 + _svg_layer_bars(labels, [("top-r share (left)", [g["principal_share_left"] for g in d.layers],
                                             "#2a9d5c"),
                                            ("random", [g["random_share_left"] for g in d.layers], "#aaaaaa")],
                                   "update energy in A's principal subspace")
                 + "</div>")
    parts.append(_table(d.layers, _GROUP_COLS))
    rows = []
    for t in d.tensors:
        sv = t.get("delta_singular_values")
        drift = t.get("sigma_drift") or []
        rows.append({**t, "shape": "×".join(map(str, t["shape"])),
                     "sv": ", ".join(_f(x, 3) for x in sv[:3]) if sv else None,
                     "drift1": drift[0] if drift else None})
    parts.append("<h2>Per tensor</h2>" + _table(rows, [
        ("name", "tensor"), ("shape", "shape"), ("rel_norm", "‖Δ‖/‖A‖"), ("changed", "changed"),
        ("changed_fraction", "changed share"), ("sv", "σ₁..₃(Δ)"), ("delta_stable_rank", "stable rank Δ"),
        ("principal_share_left", "top-r left"), ("random_share_left", "random left"),
        ("principal_share_right", "top-r right"), ("random_share_right", "random right"),
        ("drift1", "σ₁ drift")]))
    if d.notes or d.shape_mismatch:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in d.notes)
        parts.append(f"<h2>Notes</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "".join(parts)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def write(d: ModelDiff, out_dir: str | Path) -> tuple[str, str]:
    """Write ``diff.json`` and ``diff.html`` into ``out_dir`` (a local folder, created, or an ``s3://`` prefix)."""
    base = str(out_dir).rstrip("/")
    if not storage.is_remote(base):
        Path(base).mkdir(parents=True, exist_ok=True)
    j, h = f"{base}/diff.json", f"{base}/diff.html"
    storage.write_text(j, json.dumps(_json_safe(d.to_dict()), indent=2, allow_nan=False) + "\n")
    storage.write_text(h, render_html(d))
    return j, h


def summary(d: ModelDiff) -> str:
    """A few lines for the terminal."""
    o = d.overall
    lines = [f"{len(d.tensors)} tensors compared ({o['numel']:,} weights): ‖Δ‖/‖A‖ = {_f(o['rel_norm'])}, "
             f"changed {o['changed']:,} ({o['changed_fraction']:.2%}, |Δ| > {d.settings['tolerance']:g})"]
    if o.get("principal_share_left") is not None:
        lines.append(f"update energy in A's top-{d.settings['rank']} subspace: left {o['principal_share_left']:.3f} "
                     f"(random {o['random_share_left']:.3f}), right {o['principal_share_right']:.3f} "
                     f"(random {o['random_share_right']:.3f}); most changed: {o['most_changed']}")
    lines.extend(d.notes)
    return "\n".join(lines)
