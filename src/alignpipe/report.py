"""Human-readable outputs: KFP metrics, the per-stage HTML report, the learning table.

The HTML report is self-contained (inline SVG, inline CSS; no scripts, fonts or links), so the
Kubeflow UI shows it as it is and it can be mailed around.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Iterable

from rich.table import Table

#: History keys plotted when present (TRL log_history names, plus the RL/eval ones of our stages).
PLOT_KEYS = ("loss", "eval_loss", "reward", "accuracy", "eval_accuracy", "probe_accuracy", "success_rate",
             "rewards/exact_match/mean", "rewards/reward_model/mean", "kl", "entropy", "grad_norm",
             "learning_rate")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def log_metrics(metrics_artifact, result) -> None:
    """Every finite StageResult metric into a KFP Metrics artifact (`pass@4` keeps its name)."""
    for name, value in sorted(result.metrics.items()):
        if _finite(value):
            metrics_artifact.log_metric(name, float(value))
    if _finite(result.seconds):
        metrics_artifact.log_metric("time/stage_seconds", round(float(result.seconds), 3))


def series(history: Iterable[dict], keys: Iterable[str] = PLOT_KEYS) -> dict[str, list[tuple[float, float]]]:
    """{key: [(step, value), ...]} for the keys present in a log history."""
    out: dict[str, list[tuple[float, float]]] = {}
    for i, h in enumerate(history):
        step = h.get("step", h.get("round", i))
        for k in keys:
            if k in h and _finite(h[k]) and _finite(step):
                out.setdefault(k, []).append((float(step), float(h[k])))
    return {k: v for k, v in out.items() if len(v) >= 1}


def svg_plot(points: list[tuple[float, float]], title: str, width: int = 420, height: int = 220) -> str:
    """A line chart as an inline SVG element (axes with min/max labels, one polyline)."""
    pad_l, pad_r, pad_t, pad_b = 56, 12, 26, 30
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def px(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * w

    def py(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * h

    poly = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2"/>' for x, y in points) if len(points) < 40 else ""
    t = html.escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{t}">'
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="t">{t}</text>'
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" class="ax"/>'
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" class="ax"/>'
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end">{y1:.4g}</text>'
        f'<text x="{pad_l - 4}" y="{pad_t + h}" text-anchor="end">{y0:.4g}</text>'
        f'<text x="{pad_l}" y="{height - 8}">{x0:.0f}</text>'
        f'<text x="{pad_l + w}" y="{height - 8}" text-anchor="end">step {x1:.0f}</text>'
        f'<polyline points="{poly}" class="l"/><g class="d">{dots}</g></svg>'
    )


_CSS = ("body{font-family:sans-serif;margin:16px;color:#222}table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "td:first-child,th:first-child{text-align:left}svg{margin:4px;border:1px solid #eee}"
        "svg text{font-size:11px;fill:#444}svg .t{font-size:13px;fill:#222}.ax{stroke:#888}"
        ".l{fill:none;stroke:#1f6fb4;stroke-width:1.6}.d circle{fill:#1f6fb4}code{background:#f6f6f6}"
        "td.real{font-weight:bold}")


def _kv_table(rows: dict[str, Any]) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table><tr><th>name</th><th>value</th></tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _with_ci(value: Any, ci: Any) -> str:
    if not _finite(value):
        return "-"
    text = f"{value:.4g}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_finite(c) for c in ci):
        text += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
    return text


def _eval_table(models: dict[str, dict], ci: dict[str, dict] | None = None) -> str:
    """One row per metric, one column per model: value [CI low, CI high]."""
    ci = ci or {}
    names = list(models)
    metrics = sorted({c for m in models.values() for c in m})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td>" + "".join(
            f"<td>{html.escape(_with_ci(models[n].get(c), ci.get(n, {}).get(c)))}</td>" for n in names) + "</tr>"
        for c in metrics)
    return f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"


def _delta_table(deltas: dict[str, dict], confidence: float = 0.95) -> str:
    """One row per metric, one column per comparison (`rl - base`): delta [CI]; a CI that excludes 0
    is marked (bold: the difference is real at this confidence)."""
    pairs = [(name, ref) for name, refs in deltas.items() for ref in refs]
    if not pairs:
        return ""
    metrics = sorted({m for name, ref in pairs for m in deltas[name][ref]})
    head = "".join(f"<th>{html.escape(f'{n} − {r}')}</th>" for n, r in pairs)
    body = []
    for m in metrics:
        cells = []
        for n, r in pairs:
            d = deltas[n][r].get(m)
            if not d or not _finite(d.get("delta")):
                cells.append("<td>-</td>")
                continue
            text = f"{d['delta']:+.4g}"
            lo, hi = d.get("ci_low"), d.get("ci_high")
            real = _finite(lo) and _finite(hi) and (lo > 0 or hi < 0)
            if _finite(lo) and _finite(hi):
                text += f" [{lo:+.3g}, {hi:+.3g}]"
            cells.append(f"<td class='{'real' if real else ''}'>{html.escape(text)}</td>")
        body.append(f"<tr><td>{html.escape(m)}</td>{''.join(cells)}</tr>")
    note = (f"<p>Paired bootstrap over prompts, {confidence:.0%} intervals; "
            "<b>bold</b>: the interval excludes 0.</p>")
    return f"<h2>Deltas</h2>{note}<table><tr><th>metric</th>{head}</tr>{''.join(body)}</table>"


def svg_intervals(rows: list[tuple[str, float, float, float]], title: str, width: int = 420,
                  row_h: int = 22) -> str:
    """A forest plot: one row per (label, value, low, high), a dot with its interval, a line at 0."""
    pad_l, pad_r, pad_t, pad_b = 110, 16, 26, 26
    height = pad_t + pad_b + row_h * max(1, len(rows))
    lo = min([0.0] + [r[2] for r in rows] + [r[1] for r in rows])
    hi = max([0.0] + [r[3] for r in rows] + [r[1] for r in rows])
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    w = width - pad_l - pad_r

    def px(x: float) -> float:
        return pad_l + (x - lo) / (hi - lo) * w

    parts = [f'<line x1="{px(0):.1f}" y1="{pad_t}" x2="{px(0):.1f}" y2="{height - pad_b}" class="ax"/>',
             f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{pad_l + w}" y2="{height - pad_b}" class="ax"/>',
             f'<text x="{pad_l}" y="{height - 8}">{lo:.3g}</text>',
             f'<text x="{pad_l + w}" y="{height - 8}" text-anchor="end">{hi:.3g}</text>']
    for i, (label, v, a, b) in enumerate(rows):
        y = pad_t + row_h * i + row_h / 2
        parts.append(f'<text x="{pad_l - 6}" y="{y + 4:.1f}" text-anchor="end">{html.escape(label)}</text>'
                     f'<line x1="{px(a):.1f}" y1="{y:.1f}" x2="{px(b):.1f}" y2="{y:.1f}" class="l"/>'
                     f'<circle cx="{px(v):.1f}" cy="{y:.1f}" r="3" fill="#1f6fb4"/>')
    t = html.escape(title)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{t}">'
            f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="t">{t}</text>{"".join(parts)}</svg>')


def _delta_plots(deltas: dict[str, dict], metrics: Iterable[str] = ("accuracy",)) -> str:
    out = []
    for m in metrics:
        rows = [(f"{n} − {r}", d["delta"], d["ci_low"], d["ci_high"])
                for n, refs in deltas.items() for r, table in refs.items()
                for d in [table.get(m)] if d and all(_finite(d.get(x)) for x in ("delta", "ci_low", "ci_high"))]
        if rows:
            out.append(svg_intervals(rows, f"{m}: delta with CI"))
    return "".join(out)


def render_html(result, cfg=None, extra: dict | None = None) -> str:
    """The stage report: metrics, plots of the logged history, eval table (evaluate), lineage, config."""
    stage = html.escape(result.stage)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>alignpipe {stage}</title>"
             f"<style>{_CSS}</style></head><body><h1>alignpipe: {stage}</h1>",
             f"<p>output <code>{html.escape(str(result.output))}</code>, {result.seconds:.1f} s</p>"]
    if extra and extra.get("models"):
        ci = extra.get("ci") or {}
        note = (f"<p>value [{extra.get('confidence', 0.95):.0%} bootstrap interval over prompts]</p>" if ci else "")
        parts.append("<h2>Evaluation</h2>" + note + _eval_table(extra["models"], ci))
        acc = {n: m["accuracy"] for n, m in extra["models"].items() if _finite(m.get("accuracy"))}
        if acc:
            parts.append(svg_bars(acc, "accuracy by model"))
        if extra.get("deltas"):
            parts.append(_delta_table(extra["deltas"], extra.get("confidence", 0.95)))
            parts.append("<div>" + _delta_plots(extra["deltas"]) + "</div>")
    plots = series(result.history)
    if plots:
        parts.append("<h2>Training curves</h2><div>" + "".join(svg_plot(v, k) for k, v in plots.items()) + "</div>")
    parts.append("<h2>Metrics</h2>" + _kv_table({k: v for k, v in sorted(result.metrics.items())}))
    if result.lineage:
        parts.append("<h2>Lineage</h2>" + _kv_table(result.lineage))
    if cfg is not None:
        dumped = json.dumps(cfg.model_dump(mode="json"), indent=2)
        parts.append(f"<h2>Config</h2><pre>{html.escape(dumped)}</pre>")
    parts.append("</body></html>")
    return "".join(parts)


def svg_bars(values: dict[str, float], title: str, width: int = 420, height: int = 200) -> str:
    pad_t, pad_b, pad_l = 26, 30, 20
    n = max(1, len(values))
    top = max(1.0, max(values.values(), default=1.0))
    bw = (width - 2 * pad_l) / n
    h = height - pad_t - pad_b
    bars = [f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{width - pad_l}" y2="{pad_t + h}" class="ax"/>']
    for i, (name, v) in enumerate(values.items()):
        bh = max(0.0, v) / top * h
        x = pad_l + i * bw + bw * 0.15
        bars.append(f'<rect x="{x:.1f}" y="{pad_t + h - bh:.1f}" width="{bw * 0.7:.1f}" height="{bh:.1f}" '
                    f'fill="#1f6fb4"/><text x="{x + bw * 0.35:.1f}" y="{pad_t + h - bh - 3:.1f}" '
                    f'text-anchor="middle">{v:.3f}</text><text x="{x + bw * 0.35:.1f}" y="{height - 10}" '
                    f'text-anchor="middle">{html.escape(name)}</text>')
    t = html.escape(title)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{t}">'
            f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="t">{t}</text>{"".join(bars)}</svg>')


def write_html(path: str | Path, result, cfg=None) -> None:
    extra = None
    if result.stage == "evaluate" and result.output and Path(result.output).is_file():
        extra = json.loads(Path(result.output).read_text())
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(result, cfg, extra), encoding="utf-8")


def learning_table(eval_metrics: dict[str, dict], k: int | None = None) -> Table:
    """The held-out evaluation as a rich table: one row per model (base, sft, rl ...)."""
    table = Table(title="held-out evaluation")
    cols = ["accuracy"] + ([f"pass@{k}", f"maj@{k}"] if k and k > 1 else []) + ["rm_score", "response_length",
                                                                                  "distinct_2"]
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, m in eval_metrics.items():
        table.add_row(name, *[f"{m[c]:.3f}" if c in m else "-" for c in cols])
    return table
