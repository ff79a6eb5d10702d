"""The full evaluation report: report.html (one self-contained file) and report.md.

Everything a reader needs to judge a model honestly sits in one place: headline metrics with the
faces that could not be evaluated counted, confusion matrix, ROC and precision-recall curves,
a reliability diagram with ECE, the training curves, a per-group audit with 95% Wilson
intervals (worst group, largest gaps, groups too small to judge), and the most confident errors
of each kind with Grad-CAM overlays. report.html embeds its images as base64 data URIs and has
no external CSS or JavaScript, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import FaceGenderError
from ..models.modelfile import HISTORY_NAME
from . import plots
from .results import EvalResult, write_report

if TYPE_CHECKING:
    from ..infer.predictor import Predictor

ERROR_KINDS = (("female_as_male", "female", "male"), ("male_as_female", "male", "female"))
TILE_HEIGHT = 112  # px: gallery crops are shown at this height, whatever their native size


@dataclass
class GalleryItem:
    ref: str
    true: str
    predicted: str
    prob_male: float
    groups: dict[str, Any]
    crop: Image.Image | None = None
    overlay: Image.Image | None = None
    error: str | None = None  # why there is no crop (decode failure, face not found again)
    gradcam_prob_male: float | None = None  # one torch pass on the re-cut crop, as a check


@dataclass
class Gallery:
    kinds: dict[str, list[GalleryItem]] = field(default_factory=dict)
    gradcam: bool = False
    note: str = ""  # why there are no overlays, or how coarse they are


# --------------------------------------------------------------------------- gallery


def select_errors(y_male: np.ndarray, p_male: np.ndarray, threshold: float, k: int
                  ) -> dict[str, list[int]]:
    """Indices of the `k` most confident errors of each kind, most confident first."""
    y = np.asarray(y_male, dtype=int)
    p = np.asarray(p_male, dtype=float)
    pred = (p >= threshold).astype(int)
    fem_as_male = np.nonzero((y == 0) & (pred == 1))[0]
    male_as_fem = np.nonzero((y == 1) & (pred == 0))[0]
    return {"female_as_male": fem_as_male[np.argsort(-p[fem_as_male], kind="stable")][:k].tolist(),
            "male_as_female": male_as_fem[np.argsort(p[male_as_fem], kind="stable")][:k].tolist()}


def build_gallery(result: EvalResult, predictor: Predictor, k: int = 8) -> Gallery:
    """Re-cut the crops of the most confident errors (same crop policy as the evaluation) and run
    Grad-CAM on the label the evaluation gave them. Without torch the crops come alone."""
    from ..errors import MissingDependency
    from .explainer import GradCamExplainer, find_faces

    cfg = predictor.config
    picked = select_errors(result.y_male, result.p_male, cfg.threshold, k)
    gallery = Gallery()
    explainer = None
    if any(picked.values()):
        try:
            explainer = GradCamExplainer(predictor.model_dir, threads=predictor.threads)
        except MissingDependency as exc:
            gallery.note = f"Grad-CAM overlays are missing: {exc}. The crops are shown alone."
        except FaceGenderError as exc:
            gallery.note = f"Grad-CAM overlays are missing: {exc}. The crops are shown alone."
    for kind, true, wrong in ERROR_KINDS:
        items = []
        idx = picked[kind]
        samples = [result.samples[i] for i in idx] if result.samples else [result.refs[i]
                                                                             for i in idx]
        found = find_faces(samples, cfg, detect=_effective_detect(predictor), largest=True,
                           threads=predictor.threads) if idx else []
        for i, e in zip(idx, found, strict=True):
            items.append(GalleryItem(ref=result.refs[i], true=true, predicted=wrong,
                                     prob_male=float(result.p_male[i]),
                                     groups=dict(result.samples[i].groups) if result.samples
                                     else {}, crop=e.crop, error=e.error))
        have = [it for it in items if it.crop is not None]
        if explainer is not None and have:
            # Explain the label the evaluation gave (TTA or ONNX may differ from one torch pass).
            maps = explainer.explain_crops([it.crop for it in have], targets=[wrong] * len(have))
            for it, (_, pm, _, hm) in zip(have, maps, strict=True):
                it.overlay = _display(it.crop, hm)
                it.gradcam_prob_male = pm
            gallery.gradcam = True
        for it in items:
            if it.crop is not None:
                it.crop = _display(it.crop)
        gallery.kinds[kind] = items
    if gallery.gradcam and explainer is not None and explainer.feature_size:
        fh, fw = explainer.feature_size
        gallery.note = (f"Grad-CAM on layer {explainer.layer_name} of "
                        f"{cfg.arch}: a {fh}x{fw} feature map for a {cfg.input_size} px input, "
                        "so a heatmap can only say which part of the crop mattered, not which "
                        "feature. Each heatmap explains the label the model gave.")
    return gallery


def _effective_detect(predictor: Predictor) -> bool:
    """Whether the Predictor really cut detector crops: it only detects when both its `detect`
    flag and its crop policy say so, and the gallery must show the crops that were scored."""
    policy = getattr(predictor, "_policy", None)
    return bool(predictor.detect and (policy is None or policy.detect))


def _display(crop: Image.Image, heatmap: np.ndarray | None = None) -> Image.Image:
    from .explainer import overlay_heatmap

    img = crop.convert("RGB")
    if heatmap is not None:
        img = overlay_heatmap(img, heatmap)
    w = max(1, round(img.width * TILE_HEIGHT / img.height))
    return img.resize((w, TILE_HEIGHT), Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------- writing


def write_full_report(result: EvalResult, out: Path, predictor: Predictor, gallery: int = 8
                      ) -> Path:
    """Write metrics.json, predictions.csv, the plots, report.md and report.html into `out`."""
    out = Path(out)
    write_report(result, out, predictor.config.labels)  # metrics.json, predictions.csv, ...
    m = result.metrics
    cfg = predictor.config
    labels = ("female", "male")
    files: dict[str, str] = {"confusion": "confusion.png"}
    both = m.get("roc_auc") is not None
    if both:
        files["roc"] = "roc.png"
        plots.plot_pr(result.y_male, result.p_male, out / "pr.png", labels)
        files["pr"] = "pr.png"
    plots.plot_reliability(result.y_male, result.p_male, out / "reliability.png", ece=m["ece"])
    files["reliability"] = "reliability.png"
    history = read_history(predictor.model_dir / HISTORY_NAME)
    if history:
        plots.plot_history(history, out / "training.png")
        files["training"] = "training.png"
    for key, rows in result.groups.items():
        name = f"groups_{_safe(key)}.png"
        plots.plot_groups(rows, key, out / name, overall=m["accuracy"])
        files[f"groups:{key}"] = name

    gal = build_gallery(result, predictor, gallery) if gallery > 0 else Gallery()
    for kind, true, wrong in ERROR_KINDS:
        items = gal.kinds.get(kind)
        if items is None:
            continue
        tiles = [{"crop": it.crop, "overlay": it.overlay,
                  "caption": f"p(male)={it.prob_male:.3f}"} for it in items if it.crop is not None]
        name = f"errors_{kind}.png"
        plots.plot_error_gallery(tiles, out / name, f"{true.capitalize()} faces called {wrong}, "
                                 "most confident first")
        files[f"errors:{kind}"] = name

    unsure = unsure_stats(result.y_male, result.p_male, cfg.threshold, predictor.unsure_band)
    extra = {"unsure": unsure, "report_files": files,
             "gallery": {k: [{"path": it.ref, "prob_male": it.prob_male, "groups": it.groups,
                              "gradcam_prob_male": it.gradcam_prob_male, "error": it.error}
                             for it in v] for k, v in gal.kinds.items()},
             "gallery_note": gal.note}
    metrics_path = out / "metrics.json"
    data = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({**data, **extra}, indent=2) + "\n")

    ctx = {"result": result, "predictor": predictor, "files": files, "gallery": gal,
           "unsure": unsure, "history": bool(history)}
    (out / "report.md").write_text(render_markdown(ctx))
    (out / "report.html").write_text(render_html(ctx, out))
    return out


def read_history(path: Path) -> list[dict[str, Any]]:
    """history.csv rows with numbers parsed (empty cells -> None); [] when there is none."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                try:
                    row[k] = float(v) if v not in ("", None) else None
                except ValueError:
                    row[k] = v
            if row.get("epoch") is not None:
                row["epoch"] = int(row["epoch"])
                rows.append(row)
    return rows


def unsure_stats(y_male: np.ndarray, p_male: np.ndarray, threshold: float, band: float
                 ) -> dict[str, Any]:
    """How often the model would say 'unsure' (|p(male) - 0.5| < band) and how right it is
    when it does commit to a label."""
    y = np.asarray(y_male, dtype=int)
    p = np.asarray(p_male, dtype=float)
    unsure = np.abs(p - 0.5) < band
    sure = ~unsure
    correct = (p >= threshold).astype(int) == y
    return {"band": float(band), "rate": float(unsure.mean()) if len(p) else None,
            "accuracy_when_sure": float(correct[sure].mean()) if sure.any() else None,
            "accuracy_when_unsure": float(correct[unsure].mean()) if unsure.any() else None}


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(s))


def _f(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    return f"{x:.1%}" if pct else f"{x:.4f}"


def _ci(ci: list[float] | None) -> str:
    return "n/a" if ci is None else f"{ci[0]:.1%}–{ci[1]:.1%}"


def _metric_rows(m: dict[str, Any], unsure: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, value, what it means) for the headline table."""
    rows = [
        ("faces evaluated", str(m["n"]), f"{m['unreadable']} unreadable, {m['no_face']} "
         "without a detected face (not in the metrics below)"),
        ("accuracy", _f(m["accuracy"], True), f"at threshold p(male) ≥ {m['threshold']:.2f}"),
        ("accuracy counting misses", _f(m["accuracy_counting_misses"], True),
         "faces the detector missed counted as wrong"),
        ("balanced accuracy", _f(m["balanced_accuracy"], True), "mean of the two class recalls"),
        ("ROC-AUC", _f(m["roc_auc"]), "ranking quality, threshold-free"),
        ("average precision (male)", _f(m.get("average_precision_male")), "area under PR"),
        ("log loss", _f(m["log_loss"]), "lower is better"),
        ("Brier score", _f(m.get("brier")), "lower is better"),
        ("expected calibration error", _f(m["ece"]), "15 equal-width confidence bins"),
    ]
    if unsure["band"] > 0:
        rows += [("unsure rate", _f(unsure["rate"], True),
                  f"|p(male) − 0.5| < {unsure['band']:.3f}: the model says 'unsure'"),
                 ("accuracy when sure", _f(unsure["accuracy_when_sure"], True),
                  "on the faces it does label")]
    return rows


def _audit_lines(key: str, audit: dict[str, Any]) -> list[str]:
    """Plain-language findings for one attribute."""
    lines = []
    w = audit.get("worst")
    if w:
        lines.append(f"Worst group by {key}: {w['group']} with accuracy {w['accuracy']:.1%} "
                     f"(95% CI {_ci(w['ci95'])}, n={w['n']}).")
    for metric, g in audit.get("gaps", {}).items():
        what = metric.replace("_", " ")
        verdict = ("the intervals overlap, so the data cannot rule out chance"
                   if g["intervals_overlap"] else "the intervals do not overlap")
        lines.append(f"Largest {what} gap: {g['gap']:.1%} between {g['lowest']} "
                     f"({g['low']:.1%}) and {g['highest']} ({g['high']:.1%}); {verdict}.")
    lines += [f"Warning: {x}." for x in audit.get("warnings", [])]
    return lines


def _header(ctx: dict[str, Any]) -> dict[str, str]:
    m = ctx["result"].metrics
    pred = ctx["predictor"]
    cfg = pred.config
    return {
        "model": f"{m['model']} ({cfg.arch}, {cfg.input_size} px, labels {cfg.labels}, "
                 f"temperature {cfg.temperature:g})",
        "data": f"{m['data']} (split {m['split'] or 'all'})",
        "run": f"backend {m['backend']}, face detection {'on' if m['detect'] else 'off'}, "
               f"TTA {'on' if m['tta'] else 'off'}",
        "generated": f"facegender {cfg.facegender_version or ''} on "
                     f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}".replace("  ", " "),
    }


# --------------------------------------------------------------------------- markdown


def render_markdown(ctx: dict[str, Any]) -> str:
    res = ctx["result"]
    m = res.metrics
    files = ctx["files"]
    h = _header(ctx)
    L = ["# Evaluation report", "", f"- model: `{h['model']}`", f"- data: `{h['data']}`",
         f"- run: {h['run']}", f"- generated by {h['generated']}", "",
         "## Metrics", "", "| metric | value | note |", "| --- | --- | --- |"]
    L += [f"| {a} | {b} | {c.replace('|', chr(92) + '|')} |"
          for a, b, c in _metric_rows(m, ctx["unsure"])]
    L += ["", "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    L += [f"| {c} | {_f(v['precision'])} | {_f(v['recall'])} | {_f(v['f1'])} | {v['support']} |"
          for c, v in m["per_class"].items()]
    L += ["", "## Confusion matrix", "", f"![confusion matrix]({files['confusion']})", ""]
    if "roc" in files:
        L += ["## ROC and precision-recall", "", f"![ROC curve]({files['roc']}) "
              f"![precision-recall curves]({files['pr']})", ""]
    L += ["## Calibration", "", f"![reliability diagram]({files['reliability']})", "",
          f"Expected calibration error {_f(m['ece'])}: the mean gap between how sure the model "
          "says it is and how often it is right.", ""]
    L += ["## Training", ""]
    L += [f"![training curves]({files['training']})", ""] if "training" in files else \
        ["The model folder has no history.csv, so there are no training curves.", ""]
    L += ["## Per-group audit", ""]
    if not res.groups:
        L += ["The samples carry no group attributes (give a CSV manifest extra columns such "
              "as age_group to get this audit).", ""]
    for key, rows in res.groups.items():
        L += [f"### By {key}", "", f"![by {key}]({files[f'groups:{key}']})", "",
              "| group | n | accuracy | 95% CI | female recall | 95% CI | male recall | 95% CI |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            flag = " (too small)" if r["too_small"] else ""
            L.append(f"| {r['group']}{flag} | {r['n']} | {_f(r['accuracy'], True)} | "
                     f"{_ci(r['ci95'])} | {_f(r['female_recall'], True)} (n={r['female_n']}) | "
                     f"{_ci(r['female_recall_ci95'])} | {_f(r['male_recall'], True)} "
                     f"(n={r['male_n']}) | {_ci(r['male_recall_ci95'])} |")
        L += [""] + [f"- {x}" for x in _audit_lines(key, res.audit.get(key, {}))] + [""]
    L += ["## Most confident errors", ""]
    gal = ctx["gallery"]
    if gal.note:
        L += [gal.note, ""]
    for kind, true, wrong in ERROR_KINDS:
        items = gal.kinds.get(kind)
        if items is None:
            continue
        L += [f"### {true.capitalize()} called {wrong} ({len(items)} shown)", ""]
        if f"errors:{kind}" in files and items:
            L += [f"![{true} called {wrong}]({files[f'errors:{kind}']})", ""]
        L += [f"{n}. `{it.ref}` p(male)={it.prob_male:.3f}"
              + (f" ({', '.join(f'{k}={v}' for k, v in it.groups.items())})" if it.groups else "")
              + (f" — {it.error}" if it.error else "") for n, it in enumerate(items, 1)]
        L += [""] if items else ["None.", ""]
    L += ["## Classification report", "", "```", m["classification_report"].rstrip(), "```", ""]
    return "\n".join(L)


# --------------------------------------------------------------------------- html

CSS = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330;
 margin:0;background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:1.7em;margin:.2em 0} h2{margin-top:1.8em;border-bottom:1px solid #dde1e7;
 padding-bottom:.2em} h3{margin-top:1.3em}
.meta{color:#56607a;font-size:.92em} .meta code{font-size:.95em}
nav{margin:.8em 0 0;font-size:.92em} nav a{margin-right:1em;color:#2456c4;text-decoration:none}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #dde1e7;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#f0f2f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.small td{color:#8a93a6} .note{color:#56607a;font-size:.92em}
.warn{background:#fff6e0;border-left:4px solid #e0a100;padding:6px 10px;margin:.5em 0}
.find{background:#eef4ff;border-left:4px solid #2456c4;padding:6px 10px;margin:.5em 0}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.figs img{max-width:100%;border:1px solid #eceef2}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
.tile{border:1px solid #dde1e7;border-radius:6px;padding:6px;background:#fafbfc;margin:0}
.tile img{height:112px;display:inline-block;margin-right:2px}
.tile figcaption{font-size:.78em;color:#56607a;max-width:240px;word-break:break-all}
"""


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _img_file(path: Path, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{_data_uri(path.read_bytes())}">'


def _img_pil(img: Image.Image, alt: str) -> str:
    # Face tiles are photos: JPEG keeps a 16-face gallery at ~100 KB instead of ~1 MB of PNG.
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=88)
    return f'<img alt="{html.escape(alt)}" src="{_data_uri(buf.getvalue(), "image/jpeg")}">'


def render_html(ctx: dict[str, Any], out: Path) -> str:
    res = ctx["result"]
    m = res.metrics
    files = ctx["files"]
    gal: Gallery = ctx["gallery"]
    e = html.escape
    h = _header(ctx)
    P: list[str] = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
                    '<meta name="viewport" content="width=device-width,initial-scale=1">',
                    f"<title>facegender evaluation: {e(Path(str(m['data'])).name)}</title>",
                    f"<style>{CSS}</style></head><body><main>",
                    "<h1>Evaluation report</h1>",
                    f'<p class="meta">model <code>{e(h["model"])}</code><br>data '
                    f'<code>{e(h["data"])}</code><br>{e(h["run"])}<br>generated by '
                    f'{e(h["generated"])}</p>',
                    '<nav><a href="#metrics">metrics</a><a href="#confusion">confusion</a>'
                    '<a href="#curves">ROC / PR</a><a href="#calibration">calibration</a>'
                    '<a href="#training">training</a><a href="#groups">groups</a>'
                    '<a href="#errors">errors</a></nav>']
    missed = [f"{n} {what}" for n, what in ((m["no_face"], "image(s) without a detected face"),
                                            (m["unreadable"], "unreadable image(s)")) if n]
    if missed:
        P.append(f'<p class="warn">{" and ".join(missed)} are not in the metrics; '
                 "predictions.csv lists them.</p>")

    P.append('<section id="metrics"><h2>Metrics</h2><table><tr><th>metric</th><th>value</th>'
             "<th>note</th></tr>")
    P += [f'<tr><td>{e(a)}</td><td class="num">{e(b)}</td><td class="note">{e(c)}</td></tr>'
          for a, b, c in _metric_rows(m, ctx["unsure"])]
    P.append("</table><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
             "<th>support</th></tr>")
    P += [f"<tr><td>{e(c)}</td><td class=num>{_f(v['precision'])}</td><td class=num>"
          f"{_f(v['recall'])}</td><td class=num>{_f(v['f1'])}</td><td class=num>{v['support']}"
          "</td></tr>" for c, v in m["per_class"].items()]
    P.append("</table></section>")

    P.append('<section id="confusion"><h2>Confusion matrix</h2><div class="figs">'
             f'{_img_file(out / files["confusion"], "confusion matrix")}</div></section>')
    P.append('<section id="curves"><h2>ROC and precision-recall</h2>')
    if "roc" in files:
        P.append(f'<div class="figs">{_img_file(out / files["roc"], "ROC curve")}'
                 f'{_img_file(out / files["pr"], "precision-recall curves")}</div>')
    else:
        P.append('<p class="note">Only one class is present, so there is no ROC or PR curve.'
                 "</p>")
    P.append("</section>")
    P.append('<section id="calibration"><h2>Calibration</h2><div class="figs">'
             f'{_img_file(out / files["reliability"], "reliability diagram")}</div>'
             f'<p class="note">Expected calibration error {_f(m["ece"])}: the mean gap between '
             "how sure the model says it is and how often it is right (bars below the diagonal: "
             "over-confident).</p></section>")
    P.append('<section id="training"><h2>Training</h2>')
    P.append(f'<div class="figs">{_img_file(out / files["training"], "training curves")}</div>'
             if "training" in files else
             '<p class="note">The model folder has no history.csv, so there are no training '
             "curves.</p>")
    P.append("</section>")

    P.append('<section id="groups"><h2>Per-group audit</h2>')
    if not res.groups:
        P.append('<p class="note">The samples carry no group attributes (give a CSV manifest '
                 "extra columns such as age_group to get this audit).</p>")
    for key, rows in res.groups.items():
        P.append(f'<h3 id="group-{e(_safe(key))}">By {e(key)}</h3>')
        P.append('<table class="groups"><tr><th>group</th><th>n</th><th>accuracy</th>'
                 "<th>95% CI</th><th>female recall</th><th>95% CI</th><th>male recall</th>"
                 "<th>95% CI</th></tr>")
        for r in rows:
            cls = ' class="small"' if r["too_small"] else ""
            flag = " (too small)" if r["too_small"] else ""
            P.append(f"<tr{cls}><td>{e(str(r['group']))}{flag}</td><td class=num>{r['n']}</td>"
                     f"<td class=num>{_f(r['accuracy'], True)}</td><td>{_ci(r['ci95'])}</td>"
                     f"<td class=num>{_f(r['female_recall'], True)} (n={r['female_n']})</td>"
                     f"<td>{_ci(r['female_recall_ci95'])}</td>"
                     f"<td class=num>{_f(r['male_recall'], True)} (n={r['male_n']})</td>"
                     f"<td>{_ci(r['male_recall_ci95'])}</td></tr>")
        P.append("</table>")
        for line in _audit_lines(key, res.audit.get(key, {})):
            css = "warn" if line.startswith("Warning") else "find"
            P.append(f'<p class="{css}">{e(line)}</p>')
        P.append(f'<div class="figs">{_img_file(out / files[f"groups:{key}"], f"by {key}")}'
                 "</div>")
    P.append("</section>")

    P.append('<section id="errors"><h2>Most confident errors</h2>')
    if gal.note:
        P.append(f'<p class="note">{e(gal.note)}</p>')
    if not gal.kinds:
        P.append('<p class="note">No error gallery was made (gallery=0).</p>')
    for kind, true, wrong in ERROR_KINDS:
        items = gal.kinds.get(kind)
        if items is None:
            continue
        P.append(f'<h3 id="errors-{kind}">{true.capitalize()} called {wrong} '
                 f"({len(items)} shown, most confident first)</h3>")
        if not items:
            P.append('<p class="note">None.</p>')
            continue
        P.append('<div class="gallery">')
        for it in items:
            imgs = ""
            if it.crop is not None:
                imgs += _img_pil(it.crop, f"{it.ref} crop")
            if it.overlay is not None:
                imgs += _img_pil(it.overlay, f"{it.ref} Grad-CAM")
            groups = ", ".join(f"{k}={v}" for k, v in it.groups.items())
            cap = f"p(male)={it.prob_male:.3f}" + (f" · {groups}" if groups else "")
            cap += f"<br>{e(it.ref.split('::')[-1])}" + (f"<br>{e(it.error)}" if it.error else "")
            P.append(f'<figure class="tile">{imgs}<figcaption>{cap}</figcaption></figure>')
        P.append("</div>")
    P.append("</section>")
    P.append(f'<section id="classification-report"><h2>Classification report</h2><pre>'
             f'{e(m["classification_report"])}</pre></section>')
    P.append("</main></body></html>\n")
    return "\n".join(P)
