"""The one door for bytes: safe image decoding and the sources that yield Samples.

Imports only `errors` and `labels`; never torch.
"""
