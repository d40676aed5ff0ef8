"""``lvd serve``: a small HTTP service over a runs root.

Read-only views of every run (stage status and counts, each stage's ``_stats.json``, the run's
``report.html`` and ``manifest.json``), and, when started with a token, submission of a pipeline to
a Ray cluster through the Ray Jobs API. Standard library only (``http.server``); Ray is imported
only when submission is enabled.

- :mod:`curation.serve.runs`: reading run folders, never a file outside the runs root
- :mod:`curation.serve.auth`: the submission token and its constant-time check
- :mod:`curation.serve.submit`: a submission request checked, its config written, the Ray job sent
- :mod:`curation.serve.app`: routing, handlers, the server
"""
