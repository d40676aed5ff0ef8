"""Vector-index building blocks for copy-detection dedup and decontamination.

``knn``: pairs above a cosine threshold among k nearest neighbours (faiss Flat / IVF / IVF-PQ).
``components``: connected components, representatives, the chaining guard, component statistics.
``partition``: the centroid-partitioned search that Spark and Ray run one partition per task.

A low layer: imports numpy, faiss, scipy, pyarrow and ``schemas`` only.
"""
