"""The curation engine: URL lists in, deduplicated and curated image sets out.

Layers, top to bottom (nothing imports upward; ``tests/test_layers.py`` checks it):
``cli`` and ``commands/`` (the ``lvd`` CLI) and the top-level ``jobs/`` (cluster entry points) ->
``jobs/`` (one module per job: ``run_x(cfg, engine)``) -> ``engines/`` and ``runner`` / ``rundir``
-> ``stages/`` (one stage per module) -> ``models/``, ``readers/``, ``download/`` (the download
job's helpers), ``imaging``, ``io``, ``config`` and ``schemas``. ``synth/`` (the synthetic web),
``eval/`` (metrics) and ``train_descriptor/`` (the copy-descriptor trainer) serve the jobs.
"""
