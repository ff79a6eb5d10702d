"""Training: the trainer, augmentation, torch datasets, checkpoints and quantization-aware tuning.

May import every subpackage but `serve`; needs the `[train]` extra (torch).
"""
