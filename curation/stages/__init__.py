"""Stages: one per module, each a callable class over ``pa.Table`` (the contract is in ``base``),
or a pure function over a whole table for global stages (exact and near dedup). A stage never
imports the runner, the run directory, an engine, a job or another stage."""
