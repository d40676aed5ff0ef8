"""Embedding models of the curation pipeline.

``sscd`` (the SSCD copy-detection descriptor: ResNet + GeM + projection + L2), ``retrieval`` (the
DINOv2 retrieval embedder), ``descriptor`` (descriptors we train, and their checkpoint format),
``embedder`` (one loader for all of them), ``preprocess`` (pixels in), ``inference`` (batched,
overlapped inference) and ``face_blur`` (the face detector and blur of the ingest stage).
"""
