"""``report.html``: what a curator looks at after a run (ARCHITECTURE.md, "Run directory").

One self-contained static page built from what a run folder holds: the funnel from URLs to shards
with counts and drop reasons, copy-dedup components with thumbnails and similarities,
decontamination hits, per-seed retrieval examples, the cluster-size histogram, pretraining loss
curves and k-NN accuracy. Styles are inline, charts are inline SVG drawn here, pictures are small
JPEG ``data:`` URIs: it opens from a file with no network and runs no script.

Modules: :mod:`~curation.report.funnel`, :mod:`~curation.report.examples` and
:mod:`~curation.report.training` gather (each section None when its stage did not run),
:mod:`~curation.report.thumbnails` reads pictures, :mod:`~curation.report.svg` draws charts,
:mod:`~curation.report.html` renders, :mod:`~curation.report.build` ties them and writes the file.
"""

from curation.report.build import REPORT, build_report, check_run_folder, write_report

__all__ = ["REPORT", "build_report", "check_run_folder", "write_report"]
