"""Architectures (registry), the model folder (config.json + safetensors + card) and `info`.

Imports `errors`, `labels` and `version`; torch only inside functions that build a network.
"""
