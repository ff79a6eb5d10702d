"""Bytes in: files read within limits, images decoded safely, and the sources that yield
Samples.

Imports only `errors` and `labels`; never torch. Importing the package registers the tar-shard
reader (shards.py) with sources.read_source.
"""

from . import shards as _shards  # noqa: F401  (registers the WebDataset shard reader)
