"""Evaluation: metrics, per-group audits, plots, the HTML report and Grad-CAM explanations.

Imports `io`, `faces`, `models`, `infer`; torch only in `explainer`. `heldout` measures a model on
the held-out sets its card reports.
"""
