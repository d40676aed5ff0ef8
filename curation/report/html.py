"""The report page: gathered run data in, one self-contained HTML document out.

Everything a run recorded is text from outside (keys come from URL lists, eval set names from the
command line), so every value goes through :func:`html.escape`; the page's Content-Security-Policy
also forbids scripts and any load but ``data:`` images, so even a missed escape could run nothing
and fetch nothing. Styles are inline and charts are inline SVG (:mod:`curation.report.svg`).
"""

from __future__ import annotations

from html import escape

from curation.report import svg
from curation.report.examples import (
    MAX_COMPONENTS_SHOWN,
    MAX_MEMBERS_SHOWN,
    Component,
    CopyDedup,
    EvalHits,
    SeedExample,
)
from curation.report.funnel import NOT_RUN, UNREADABLE, FunnelStep
from curation.report.training import ClusterSizes, LossCurves

FUNNEL = "Funnel: from URLs to shards"
COPY_DEDUP = "Copy-dedup examples"
LARGEST = "Largest copy-dedup components"
DECONTAMINATION = "Decontamination hits"
RETRIEVAL = "Retrieval examples per seed"
CLUSTERS = "Cluster sizes"
PRETRAINING = "Pretraining loss curves"
KNN = "k-NN accuracy"
SECTIONS = (FUNNEL, COPY_DEDUP, LARGEST, DECONTAMINATION, RETRIEVAL, CLUSTERS, PRETRAINING, KNN)

NO_COMPONENT = '<p class="muted">no component with more than one image</p>'
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.not-run { color: #888; font-style: italic; }
.row { display: flex; flex-wrap: wrap; gap: .5em; align-items: flex-start; margin: .3em 0; }
figure { margin: 0; width: 104px; font-size: 11px; text-align: center; }
figure img { display: block; margin: 0 auto; max-width: 96px; max-height: 96px; }
figure.seed { border-right: 3px solid #1f77b4; padding-right: .5em; }
figure.kept img { outline: 3px solid #2ca02c; }
.missing { width: 96px; height: 64px; margin: 0 auto; background: #eee; color: #888;
           display: flex; align-items: center; justify-content: center; }
.key { font-family: monospace; word-break: break-all; }
.muted { color: #666; font-size: .9em; }
"""


def _text(value) -> str:
    return escape(str(value), quote=True)


def not_run(what: str) -> str:
    return f'<p class="not-run">{_text(what)}: not run</p>'


def unreadable(reason: str) -> str:
    return f'<p class="not-run">{UNREADABLE}: {_text(reason)}</p>'


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else _text(value)


def _pairs(counts: dict) -> str:
    return ", ".join(f"{_text(k)}: {_number(v)}" for k, v in counts.items())


def thumb(key: str, uri: str | None, caption: str = "", css: str = "") -> str:
    """A picture with its key and a caption; a grey box (never a broken image) when the bytes
    could not be read."""
    picture = (
        f'<img src="{_text(uri)}" alt="{_text(key)}">'
        if uri
        else '<div class="missing">no image</div>'
    )
    extra = f"<br>{_text(caption)}" if caption else ""
    return (
        f'<figure class="{_text(css)}">{picture}'
        f'<figcaption><span class="key">{_text(key)}</span>{extra}</figcaption></figure>'
    )


def funnel_section(steps: list[FunnelStep]) -> str:
    rows = []
    for step in steps:
        if step.state == NOT_RUN or step.state.startswith(UNREADABLE):
            cells = f'<td colspan="4" class="not-run">{_text(step.state)}</td>'
        else:
            state = "" if step.state == "done" else f' <span class="muted">({step.state})</span>'
            cells = (
                f'<td class="n">{_number(step.rows_in)}</td>'
                f'<td class="n">{_number(step.rows_out)}{state}</td>'
                f"<td>{_pairs(step.dropped)}</td><td>{_pairs(step.detail)}</td>"
            )
        rows.append(
            f'<tr><td>{_text(step.name)}</td><td class="key">{_text(step.folder)}</td>{cells}</tr>'
        )
    head = "<tr><th>step</th><th>folder</th><th>in</th><th>out</th><th>dropped</th><th>breakdown</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _component(component: Component, thumbs: dict[str, str]) -> str:
    figures = []
    for member in component.members[:MAX_MEMBERS_SHOWN]:
        caption = member.reason
        if member.similarity is not None:
            caption += f" · sim {member.similarity:.3f}"
        css = "kept" if member.key == component.representative else ""
        figures.append(thumb(member.key, thumbs.get(member.key), caption, css))
    more = len(component.members) - MAX_MEMBERS_SHOWN
    tail = f'<p class="muted">and {more} more</p>' if more > 0 else ""
    edges = ", ".join(f"{_text(a)}–{_text(b)}: {s:.3f}" for a, b, s in component.edges[:12])
    return (
        f"<h3>component {component.component_id}: {component.size} images</h3>"
        f'<div class="row">{"".join(figures)}</div>{tail}'
        + (f'<p class="muted">edges: {edges}</p>' if edges else "")
    )


def copy_dedup_section(copy: CopyDedup | None, thumbs: dict[str, str]) -> str:
    if copy is None:
        return not_run("copy dedup (dedup_copy/)")
    scoring = _pairs(
        {k: v for k, v in copy.scoring.items() if v is not None and not isinstance(v, dict)}
    )
    intro = (
        f'<p class="muted">{copy.pairs} pair(s) above the threshold; {copy.singletons} image(s) '
        f"alone in their component. Scoring: {scoring or 'not recorded'}. The kept image is "
        "outlined; each other member shows its similarity to it (or to its nearest member).</p>"
    )
    body = "".join(_component(c, thumbs) for c in copy.components[:MAX_COMPONENTS_SHOWN])
    return intro + (body or NO_COMPONENT)


def largest_section(copy: CopyDedup | None) -> str:
    if copy is None:
        return not_run("copy dedup (dedup_copy/)")
    rows = "".join(
        f'<tr><td class="n">{c.component_id}</td><td class="n">{c.size}</td>'
        f'<td class="key">{_text(c.representative)}</td>'
        f'<td class="key">{_text(", ".join(m.key for m in c.members))}</td></tr>'
        for c in copy.components
    )
    if not rows:
        return NO_COMPONENT
    head = "<tr><th>component</th><th>size</th><th>kept</th><th>members</th></tr>"
    return f"<table>{head}{rows}</table>"


def decontamination_section(hits: list[EvalHits] | None, pool: dict, evals: dict) -> str:
    if hits is None:
        return not_run("decontamination (dedup_copy/)")
    if not hits:
        return '<p class="muted">copy dedup ran without evaluation sets</p>'
    parts = []
    for hit in hits:
        parts.append(
            f"<h3>eval set {_text(hit.name)}: {_number(hit.pool_images_matched)} pool image(s) "
            f"matched among {_number(hit.eval_images)} eval image(s)</h3>"
        )
        for example in hit.examples:
            pool_key, eval_key = str(example.get("pool")), str(example.get("eval"))
            sim = example.get("sim")
            caption = f"sim {sim:.3f}" if isinstance(sim, int | float) else ""
            parts.append(
                '<div class="row">'
                + thumb(pool_key, pool.get(pool_key), f"pool · {caption}")
                + thumb(eval_key, evals.get((hit.name, eval_key)), "eval image")
                + "</div>"
            )
        if not hit.examples:
            parts.append('<p class="muted">no pool image near this set</p>')
    return "".join(parts)


def retrieval_section(examples: dict[str, list[SeedExample]] | None, pool, seeds) -> str:
    if examples is None:
        return not_run("retrieval (retrieval/)")
    if not examples:
        return '<p class="muted">no seed dataset retrieved in sample mode</p>'
    parts = []
    for dataset, seeds_shown in examples.items():
        parts.append(f"<h3>seed dataset {_text(dataset)}</h3>")
        for example in seeds_shown:
            row = [thumb(example.seed_key, seeds.get((dataset, example.seed_key)), "seed", "seed")]
            for key, rank, sim in example.neighbours:
                caption = f"#{rank}" if rank is not None else ""
                if sim is not None:
                    caption += f" · sim {sim:.3f}"
                row.append(thumb(key, pool.get(key), caption))
            parts.append(f'<div class="row">{"".join(row)}</div>')
    return "".join(parts)


def clusters_section(clusters: ClusterSizes | None) -> str:
    if clusters is None:
        return not_run("k-means (clusters/)")
    sizes = clusters.sizes
    summary = (
        f'<p class="muted">{len(sizes)} non-empty cluster(s), {clusters.empty} empty; sizes '
        f"{min(sizes)}–{max(sizes)}, {sum(sizes)} image(s)</p>"
        if sizes
        else '<p class="muted">no assignment</p>'
    )
    labels = [f"{lo}" if lo == hi else f"{lo}–{hi}" for lo, hi, _ in clusters.bins]
    chart = svg.bar_chart(
        labels,
        [n for _, _, n in clusters.bins],
        "clusters per size",
        x_label="images in the cluster",
        y_label="clusters",
    )
    return summary + chart


def pretraining_section(curves: LossCurves | None) -> str:
    if curves is None:
        return not_run("pretraining (pretrain/metrics.jsonl)")
    charts = []
    if curves.total:
        charts.append(
            svg.line_chart({"total_loss": curves.total}, "total loss", "iteration", y_label="loss")
        )
    if curves.parts:
        charts.append(svg.line_chart(curves.parts, "loss terms", "iteration", y_label="loss"))
    return "".join(charts)


def knn_section(results: dict[str, dict] | None) -> str:
    if results is None:
        return not_run("k-NN evaluation (demo_summary.json, knn*.json)")
    columns: list[str] = []
    for figures in results.values():
        for name, value in figures.items():
            if isinstance(value, int | float) and name not in columns:
                columns.append(name)
    columns.sort(key=lambda c: (not c.startswith("knn_top"), c))
    head = "".join(f"<th>{_text(c)}</th>" for c in columns)
    rows = "".join(
        f"<tr><td>{_text(name)}</td>"
        + "".join(f'<td class="n">{_number(figures.get(c))}</td>' for c in columns)
        + "</tr>"
        for name, figures in results.items()
    )
    return f"<table><tr><th>model</th>{head}</tr>{rows}</table>"


def page(title: str, subtitle: str, body: list[tuple[str, str]]) -> str:
    """The document: ``body`` is (heading, section HTML) pairs."""
    sections = "".join(f"<h2>{_text(heading)}</h2>{html}" for heading, html in body)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{_text(title)}</title><style>{STYLE}</style></head>"
        f'<body><h1>{_text(title)}</h1><p class="muted">{_text(subtitle)}</p>'
        f"{sections}</body></html>\n"
    )
