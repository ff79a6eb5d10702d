"""The model card (README.md in the model folder), written from config.json so it cannot drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .modelfile import CARD_NAME, ModelConfig


def _pct(x: Any) -> str:
    return f"{x:.2%}" if isinstance(x, (int, float)) else "n/a"


def _qat_section(qat: dict | None, before: dict | None) -> list[str]:
    """Quantization-aware fine-tuning, when the weights came from `facegender qat`."""
    if not qat:
        return []
    val = (before or {}).get("val") or {}
    return [
        "",
        "### Quantization-aware fine-tuning (`facegender qat`)",
        "The weights above were then fine-tuned while simulating ONNX Runtime's INT8 "
        "quantization, so the INT8 export labels faces as this model does; the validation "
        "metrics above are the fine-tuned model's.",
        "```",
        qat.get("command") or "(run through the Python API; parameters below)",
        "```",
        "| parameter | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in qat.items() if k not in ("command", "data", "val")],
        f"| val accuracy before fine-tuning | {_pct(val.get('accuracy'))} |",
    ]


def write_card(folder: Path, cfg: ModelConfig, extra_sections: str = "") -> Path:
    r, d, m = cfg.recipe, cfg.data, cfg.metrics.get("val", {})
    lines = [
        f"# facegender model: {cfg.arch} @ {cfg.input_size}px",
        "",
        "Classifies a face crop as **female** or **male** (the labels in the training data) with a "
        "calibrated probability, or flags it **unsure** near 0.5.",
        "",
        "## Intended use and misuse",
        "- For research, dataset auditing and aggregate analytics on faces of consenting people.",
        "- Not for decisions about individuals (access, hiring, policing, moderation), not to infer "
        "anyone's gender identity: the output is how a face *reads* against binary labels that "
        "annotators gave to photos.",
        "",
        "## Model",
        f"- Architecture: `{cfg.arch}`, input {cfg.input_size}x{cfg.input_size} RGB, mean "
        f"{cfg.mean}, std {cfg.std}",
        f"- Labels (output order): {cfg.labels}",
        f"- Crop policy: `{cfg.crop}`",
        f"- Decision: p(male) >= {cfg.threshold} is male; temperature {cfg.temperature}; "
        f"unsure when |p - 0.5| < {cfg.unsure_band}"
        + ("; each face is classified with its mirror image and the two probabilities averaged "
           "(flip TTA, the model's default; `--no-tta` / `tta=False` turns it off)"
           if cfg.tta else "")
        + (f"; a crop read whole (no face detected in it, always unsure) has temperature "
           f"{cfg.whole_image_temperature}" if cfg.whole_image_temperature else ""),
        "",
        *(_data_lines(d, m, r)),
        "## Recipe (reproduce)",
        "```",
        r.get("command") or r.get("made_by") or "(trained through the Python API; parameters below)",
        "```",
        "| parameter | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in r.items() if k not in ("command", "qat")],
        f"| training time (s) | {cfg.metrics.get('train_seconds')} |",
        *_qat_section(r.get("qat"), cfg.metrics.get("before_qat")),
        "",
        "## Limits",
        "- Binary labels only; they say nothing about how a person identifies.",
        "- Accuracy depends on the crop: give photos through the face detector (default) or tight "
        "face crops with `--no-detect`.",
        "- Check per-group accuracy (`facegender evaluate --report`) on your own population "
        "before relying on it.",
    ]
    if extra_sections:
        lines += ["", extra_sections.strip()]
    out = folder / CARD_NAME
    out.write_text("\n".join(lines) + "\n")
    return out


def _data_lines(d: dict, m: dict, r: dict) -> list[str]:
    """Training data and validation metrics; a model not trained here (published weights,
    only calibrated) says so instead of a table of n/a."""
    if not d.get("train"):
        return ["## Training data",
                f"- Not trained here: {r.get('recipe', 'published weights')}.",
                f"- Calibration: {r.get('calibration', 'none recorded')}.", ""]
    return [
        "## Training data",
        f"- Train: {d.get('train', {}).get('source')} — {d.get('train', {}).get('images')} faces "
        f"{d.get('train', {}).get('classes', '')}",
        f"- Validation (model selection and calibration): {d.get('val', {}).get('source')} — "
        f"{d.get('val', {}).get('images')} faces",
        "",
        "## Validation metrics (best epoch, calibrated)",
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy | {_pct(m.get('accuracy'))} |",
        f"| balanced accuracy | {_pct(m.get('balanced_accuracy'))} |",
        f"| ROC-AUC | {m.get('roc_auc', float('nan')):.4f} |" if m.get("roc_auc") is not None
        else "| ROC-AUC | n/a |",
        f"| female recall | {_pct(m.get('per_class', {}).get('female', {}).get('recall'))} |",
        f"| male recall | {_pct(m.get('per_class', {}).get('male', {}).get('recall'))} |",
        f"| ECE before / after temperature | {_pct(m.get('ece_before_calibration'))} / "
        f"{_pct(m.get('ece_after_calibration'))} |",
        f"| unsure rate / accuracy when sure | {_pct(m.get('unsure_rate'))} / "
        f"{_pct(m.get('accuracy_when_sure'))} |",
        "",
    ]
