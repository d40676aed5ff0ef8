"""The job layer: one module per job, each a plain ``run_x(cfg: CurationConfig, engine)`` that the
CLI (``curation/commands/``), the cluster entry points (``jobs/``) and tests call.

A job wires stages to folders of a run directory and runs them with an engine through the runner;
stages never know who runs them or where their outputs go. Layers, top to bottom: commands and
``jobs/`` -> this package -> engines and runner -> stages -> models, readers, io, schemas.
"""
