"""Scaling out prediction: batch prediction on Ray into partitioned Parquet (`[scale]` extra).

`partitions.py` plans the work and the restart (plain Python); `ray_predict.py` runs it on a
Ray actor pool. Training scales out under torchrun instead (training/distributed.py).
"""
