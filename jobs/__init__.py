"""Cluster entry points: ``ray job submit -- python jobs/curate_ray.py ...`` (the curation job on a
Ray cluster). Each is a thin wrapper over a job function in :mod:`curation.jobs`."""
