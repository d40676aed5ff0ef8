"""``lvd report``: the data gathered from a run folder, the page rendered from it, and the page as
a real browser shows it.

The run folder here is built by hand from the stages' schemas (a few milliseconds, no models):
real JPEG bytes in a tar addressed by run-relative lineage, as download and ingest leave them;
ENCODED_IMAGE folders with the bytes inline, as ``seed_<name>/`` and ``embed_eval_<name>_inputs/``
hold them; one pool key carries markup, so escaping is checked on every section that shows keys.

The browser test drives Debian's Chromium over the DevTools protocol: the page loads with no
console error, no request leaves the page (only ``file:`` and ``data:``), every ``<img>`` decodes,
every chart has a size, and every section heading is there. Chromium is installed by the session
fixture when absent (``apt-get install chromium``, as root, as CI runs); where it cannot be, the
test skips locally and fails under CI.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.cli import main
from curation.report import build_report, write_report
from curation.report import html as report_html
from curation.report.build import NotARunError, check_run_folder
from curation.report.funnel import NOT_RUN, funnel
from curation.report.svg import nice_ticks
from curation.report.thumbnails import Thumbnails
from curation.report.training import knn_results, loss_curves, size_bins
from schemas import (
    CLUSTER_ASSIGNMENT_SCHEMA,
    DEDUP_COMPONENT_SCHEMA,
    DEDUP_EDGE_SCHEMA,
    ENCODED_IMAGE_SCHEMA,
    IMAGE_RECORD_SCHEMA,
    RETRIEVAL_SELECTION_SCHEMA,
)

HOSTILE = '<script>alert("x")</script>&'
POOL = ["p00", "p01", "p02", "p03", "p04", "p05", HOSTILE]
DOWNLOAD_STATS = {"rows_in": 10, "status_success": 8, "status_failed_to_download": 2}
INGEST_STATS = {"rows_in": 8, "status_ok": 7, "status_decode_error": 1}
EXACT_STATS = {"rows_in": 7, "reason_kept": 7}
NEAR_STATS = {"rows_in": 7, "reason_kept": 7, "reason_near_duplicate": 0}
# p01 and p02 copies of p00 (kept); p03 a copy of the eval image; HOSTILE a copy of p04 (kept).
COMPONENTS = [
    ("p00", 0, "p00", True, "kept"),
    ("p01", 0, "p00", False, "duplicate"),
    ("p02", 0, "p00", False, "duplicate"),
    ("p03", 3, "p03", False, "eval_contaminated"),
    ("p04", 4, "p04", True, "kept"),
    (HOSTILE, 4, "p04", False, "duplicate"),
    ("p05", 6, "p05", True, "kept"),
]
EDGES = [("p00", "p01", 0.97), ("p00", "p02", 0.91), ("p01", "p02", 0.93), ("p04", HOSTILE, 0.99)]
KEPT = ["p00", "p04", "p05"]
SELECTIONS = [  # (key, seed_dataset, mode, seed_key, rank, similarity)
    ("web-s0", "web", "as_is", "s0", None, None),
    ("p05", "web", "sample", "s0", 1, 0.88),
    ("p00", "web", "sample", "s0", 0, 0.93),
    (HOSTILE, "web", "sample", "s1", 0, 0.8),
]
IMAGES_SHOWN = 12
METRICS = [
    {"iteration": i, "total_loss": 11.0 - i, "dino_global_crops_loss": 2.0 - 0.1 * i}
    | {"ibot_loss": 1.5, "koleo_loss": -0.2 * i, "lr": 0.001}
    for i in range(5)
]


def jpeg(colour: tuple[int, int, int], size=(120, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def colour(i: int) -> tuple[int, int, int]:
    return (40 * i % 256, 200 - 20 * i, 90)


def write_stage(root: Path, folder: str, table=None, schema=None, stats=None) -> None:
    stage = root / folder
    stage.mkdir(parents=True, exist_ok=True)
    if table is not None:
        pq.write_table(pa.Table.from_pylist(table, schema=schema), stage / "part-00000.parquet")
    if stats is not None:
        (stage / "_stats.json").write_text(json.dumps({"stage": folder, **stats}))
    (stage / "_SUCCESS").write_bytes(b"")


def pool_records(root: Path) -> list[dict]:
    """The pool's JPEGs in one tar under download/_raw, as IMAGE_RECORD rows (run-relative)."""
    raw = root / "download" / "_raw"
    raw.mkdir(parents=True)
    with tarfile.open(raw / "00000.tar", "w") as tar:
        for i in range(len(POOL)):
            data = jpeg(colour(i))
            info = tarfile.TarInfo(f"{i:09d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    records = []
    with tarfile.open(raw / "00000.tar") as tar:
        for key, member in zip(POOL, tar.getmembers()):
            records.append(
                {
                    "key": key,
                    "status": "ok",
                    "source_file": "download/_raw/00000.tar",
                    "source_offset": member.offset_data,
                    "source_size": member.size,
                }
            )
    return records


def encoded(keys: list[str], start: int) -> list[dict]:
    return [{"key": k, "image": jpeg(colour(start + i))} for i, k in enumerate(keys)]


def make_run(root: Path, stages: str = "all") -> Path:
    """A run folder with every stage the report reads (``stages="download"``: only the first)."""
    root.mkdir(parents=True)
    (root / "_config.yaml").write_text("name: report-test\n")
    records = pool_records(root)
    write_stage(root, "download", stats=DOWNLOAD_STATS)
    if stages == "download":
        return root
    write_stage(root, "ingest", stats=INGEST_STATS)
    write_stage(root, "dedup_exact", stats=EXACT_STATS)
    write_stage(root, "dedup_near", stats=NEAR_STATS)
    write_stage(root, "unique_images", records, IMAGE_RECORD_SCHEMA, {"rows_out": len(records)})
    components = [dict(zip(DEDUP_COMPONENT_SCHEMA.names, row)) for row in COMPONENTS]
    copy_stats = {
        "pairs": len(EDGES),
        "reason_duplicate": 3,
        "reason_eval_contaminated": 1,
        "scoring": {"kind": "cosine", "threshold": 0.9, "calibration_from": None},
        "eval_bench": {
            "eval_images": 2,
            "pool_images_matched": 1,
            "examples": [{"pool": "p03", "eval": "e0", "sim": 0.96}],
        },
    }
    write_stage(root, "dedup_copy", components, DEDUP_COMPONENT_SCHEMA, copy_stats)
    edges = [dict(zip(DEDUP_EDGE_SCHEMA.names, e)) for e in EDGES]
    write_stage(root, "dedup_edges", edges, DEDUP_EDGE_SCHEMA, {"rows_out": len(edges)})
    kept = [r for r in records if r["key"] in KEPT]
    write_stage(root, "deduplicated_images", kept, IMAGE_RECORD_SCHEMA, {"rows_in": 7})
    write_stage(root, "embed_eval_bench_inputs", encoded(["e0", "e1"], 20), ENCODED_IMAGE_SCHEMA)
    write_stage(root, "seed_web", encoded(["s0", "s1"], 30), ENCODED_IMAGE_SCHEMA)
    selections = [dict(zip(RETRIEVAL_SELECTION_SCHEMA.names, s)) for s in SELECTIONS]
    write_stage(root, "retrieval", selections, RETRIEVAL_SELECTION_SCHEMA, {"rows_out": 4})
    write_stage(root, "retrieved_images", kept, IMAGE_RECORD_SCHEMA, {"rows_out": 3})
    clusters = [{"key": k, "cluster_id": c, "distance": 0.1} for k, c in zip(KEPT, (0, 0, 1))]
    write_stage(root, "clusters", clusters, CLUSTER_ASSIGNMENT_SCHEMA, {"sizes": {"empty": 1}})
    write_stage(root, "shards", stats={"rows_in": 4, "rows_out": 4, "shards": 1})
    manifest = {
        "num_samples": 4,
        "shards": [{"path": "shards/shard-00000.tar"}],
        "composition": [{"seed_dataset": "web", "mode": "sample", "num_samples": 3}],
        "created_at": "2026-01-01T00:00:00Z",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "pretrain").mkdir()
    lines = [json.dumps(m) for m in METRICS]
    (root / "pretrain" / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 5, "to')
    summary = {"knn_teacher": {"knn_top1": 0.61, "knn_top5": 0.93}, "other": {"x": 1}}
    (root / "demo_summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run")


# ------------------------------------------------------------------ gathering


def test_funnel_counts_equal_the_stage_stats(run):
    steps = {step.folder: step for step in funnel(str(run))}
    assert [s.state for s in steps.values()] == ["done"] * len(steps)
    download = steps["download"]
    assert (download.rows_in, download.rows_out) == (10, 8)
    assert download.dropped == {"failed_to_download": 2}
    ingest = steps["ingest"]
    assert (ingest.rows_in, ingest.rows_out, ingest.dropped) == (8, 7, {"decode_error": 1})
    assert (steps["dedup_exact"].rows_out, steps["dedup_exact"].dropped) == (7, {})
    assert steps["dedup_near"].dropped == {}  # a zero count is no drop
    copy = steps["dedup_copy"]  # counted in the DEDUP_COMPONENT rows
    assert (copy.rows_in, copy.rows_out) == (7, 3)
    assert copy.dropped == {"duplicate": 3, "eval_contaminated": 1}
    assert steps["deduplicated_images"].rows_out == 3  # from the Parquet footer
    assert steps["retrieval"].rows_out == 4
    assert steps["retrieval"].detail == {"web/as_is": 1, "web/sample": 3}
    assert steps["retrieved_images"].rows_out == 3
    assert (steps["shards"].rows_in, steps["shards"].rows_out) == (4, 4)
    assert steps["manifest.json"].rows_out == 4
    assert steps["manifest.json"].detail == {"shards": 1, "web/sample": 3}


def test_a_stage_without_its_success_marker_is_incomplete(run):
    (run / "ingest" / "_SUCCESS").unlink()
    shutil.rmtree(run / "dedup_exact")
    steps = {step.folder: step for step in funnel(str(run))}
    assert steps["ingest"].state == "incomplete"
    assert steps["ingest"].rows_out == 7  # partial counts still shown
    assert steps["dedup_exact"].state == NOT_RUN
    assert steps["dedup_exact"].rows_out is None


def test_missing_stages_render_as_not_run(tmp_path):
    run = make_run(tmp_path / "run", stages="download")
    page = build_report(str(run))
    for heading in report_html.SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    steps = funnel(str(run))
    assert [s.state for s in steps] == ["done"] + [NOT_RUN] * (len(steps) - 1)
    assert page.count(f'class="not-run">{NOT_RUN}</td>') == len(steps) - 1
    for what in ("copy dedup", "decontamination", "retrieval", "k-means", "pretraining", "k-NN"):
        assert f"{what}" in page and ": not run</p>" in page
    assert page.count(": not run</p>") == 7  # every section but the funnel
    assert "<img" not in page and "<svg" not in page


def test_keys_are_escaped_and_the_page_has_no_script(run):
    page = build_report(str(run))
    assert "<script" not in page.lower()
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"
    # in the component pictures and table, the edges, and the retrieval neighbours
    assert page.count(escaped) >= 4
    assert "default-src 'none'" in page  # and the page may load nothing even if one slipped


def test_sections_show_what_the_run_holds(run):
    page = build_report(str(run))
    assert "component 0: 3 images" in page and "component 4: 2 images" in page
    assert "4 pair(s) above the threshold; 2 image(s) alone in their component" in page
    assert "sim 0.970" in page  # p01 to its kept representative p00
    assert "p00–p01: 0.970" in page
    assert "eval set bench: 1 pool image(s) matched among 2 eval image(s)" in page
    assert "seed dataset web" in page and "#0 · sim 0.930" in page
    # neighbours in rank order: p00 (rank 0) before p05 (rank 1)
    assert page.index("#0 · sim 0.930") < page.index("#1 · sim 0.880")
    assert "2 non-empty cluster(s), 1 empty" in page
    assert page.count('<svg class="chart"') == 3  # cluster sizes, total loss, loss terms
    assert "knn_teacher" in page and "0.61" in page and "0.93" in page


def test_thumbnails_are_small_jpegs_and_follow_a_moved_run(run, tmp_path):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, moved)
    shutil.rmtree(run)  # lineage is run-relative: the moved copy still finds its bytes
    found = Thumbnails(str(moved)).pool(["p00", HOSTILE, "nope"])
    assert set(found) == {"p00", HOSTILE}
    header, _, payload = found["p00"].partition(",")
    assert header == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.format == "JPEG" and max(image.size) == 96
    assert image.getpixel((10, 10))[1] == pytest.approx(colour(0)[1], abs=6)
    seeds = Thumbnails(str(moved)).encoded("seed_web", ["s1"])
    assert list(seeds) == ["s1"]
    page = build_report(str(moved))
    # components (3 + 2), the eval hit (pool + eval image), seeds (2), their neighbours (2 + 1)
    assert page.count("<img ") == IMAGES_SHOWN


def test_an_unreadable_stage_is_reported_and_the_rest_still_renders(run):
    (run / "clusters" / "part-00000.parquet").write_bytes(b"PAR1 not parquet")
    (run / "dedup_copy" / "part-00000.parquet").write_bytes(b"PAR1 not parquet")
    steps = {step.folder: step for step in funnel(str(run))}
    assert steps["dedup_copy"].state.startswith("could not be read: ")
    assert steps["deduplicated_images"].rows_out == 3  # the steps after it still counted
    page = build_report(str(run), thumbnails=False)
    assert page.count("could not be read: ") == 1 + 2 + 1  # funnel row, copy sections, clusters
    assert "eval set bench" in page and "seed dataset web" in page  # other sections unaffected
    assert page.count('<svg class="chart"') == 2


def test_loss_curves_skip_a_half_written_line(run):
    curves = loss_curves(str(run))
    assert [x for x, _ in curves.total] == [0, 1, 2, 3, 4]
    assert curves.total[-1] == (4.0, 7.0)
    assert set(curves.parts) == {"dino_global_crops_loss", "ibot_loss", "koleo_loss"}


def test_knn_results_come_from_the_demo_summary_and_knn_files(run):
    summary = {"knn_teacher": {"knn_top1": 0.6}, "stats": {"knn_untrained": {"knn_top1": 0.2}}}
    (run / "demo_summary.json").write_text(json.dumps(summary))
    (run / "knn_heldout.json").write_text(json.dumps({"knn_top1": 0.5, "knn_top5": 0.8}))
    (run / "knn_broken.json").write_text("{not json")
    (run / "knn_other.json").write_text(json.dumps({"accuracy": 1.0}))  # no knn_* figure
    assert knn_results(str(run)) == {
        "knn_teacher": {"knn_top1": 0.6},
        "stats.knn_untrained": {"knn_top1": 0.2},
        "knn_heldout": {"knn_top1": 0.5, "knn_top5": 0.8},
    }


@pytest.mark.parametrize(
    "sizes", [[5], [3, 3, 3], [1, 2, 3, 50, 51, 400], list(range(1, 100)), [7, 9]]
)
def test_size_bins_cover_every_cluster_once(sizes):
    bins = size_bins(sizes)
    assert sum(n for _, _, n in bins) == len(sizes)
    assert bins[0][0] == min(sizes) and bins[-1][1] == max(sizes)
    assert len(bins) <= 20
    for low, high, n in bins:
        assert n == sum(low <= s <= high for s in sizes)


@pytest.mark.parametrize("low,high", [(0, 1), (0, 7), (10.5, 13.2), (-0.6, 0.0), (3, 3)])
def test_ticks_cover_the_range(low, high):
    ticks = nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high
    assert 2 <= len(ticks) <= 12


# ------------------------------------------------------------------ command


def test_command_writes_report_html(run, capsys):
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert str(run / "report.html") in capsys.readouterr().out
    out = run.parent / "copy" / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert out.read_text() == (run / "report.html").read_text()  # the same run, the same page


def test_a_folder_that_holds_no_run_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(NotARunError, match="holds no run"):
        check_run_folder(str(tmp_path / "runs"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(str(tmp_path / "nope"))


# ------------------------------------------------------------------ browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root, as CI runs
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # no calls home: this machine has no network but the package registries
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


def _fail_or_skip(message: str):
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get when absent (as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        _fail_or_skip("chromium is not installed and apt-get cannot run here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        ["apt-get", *lock, "update", "-qq"],
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            _fail_or_skip(f"`{' '.join(command)}` failed: {' / '.join(tail)}")
    found = shutil.which("chromium")
    if not found:
        _fail_or_skip("apt-get installed chromium but no `chromium` is on PATH")
    return found


class DevTools:
    """A minimal DevTools-protocol client: commands by id, events kept in order."""

    def __init__(self, websocket_module, url: str):
        self.ws = websocket_module.create_connection(url, timeout=20, suppress_origin=True)
        self.last_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {seconds} s")
            self.events.append(json.loads(self.ws.recv()))

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def devtools(chromium, require, tmp_path):
    websocket = require("websocket")  # websocket-client, in the dev extra
    profile = tmp_path / "profile"
    log = (tmp_path / "chromium.log").open("w")
    process = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"chromium did not start: {(tmp_path / 'chromium.log').read_text()[-800:]}"
                )
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
        with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t.get("type") == "page")
        client = DevTools(websocket, page["webSocketDebuggerUrl"])
        yield client
        client.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


PAGE_FACTS = """(() => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  return {
    images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]),
    charts: [...document.querySelectorAll('svg.chart')].map(box),
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
    scripts: document.querySelectorAll('script').length,
  };
})()"""


@pytest.mark.timeout(600)  # the first use may install Chromium
def test_the_page_renders_in_a_real_browser(run, devtools):
    report = Path(write_report(str(run)))
    client = devtools
    for domain in ("Page", "Runtime", "Log", "Network"):
        client.call(f"{domain}.enable")
    client.call("Page.navigate", url=report.as_uri())
    client.wait_for("Page.loadEventFired", 20)
    facts = client.call("Runtime.evaluate", expression=PAGE_FACTS, returnByValue=True)
    facts = facts["result"]["value"]

    errors = [
        e["params"]
        for e in client.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert errors == []
    requested = {
        e["params"]["request"]["url"].partition(":")[0]
        for e in client.events
        if e.get("method") == "Network.requestWillBeSent"
    }
    assert requested <= {"file", "data"}, requested  # nothing from the network
    assert len(facts["images"]) == IMAGES_SHOWN
    undecoded = [i for i in facts["images"] if not (i[1] and i[2] > 0 and i[3] > 0)]
    assert undecoded == []
    assert HOSTILE in {i[0] for i in facts["images"]}  # shown as text, not run
    assert len(facts["charts"]) == 3
    assert all(w > 0 and h > 0 for w, h in facts["charts"])
    assert facts["headings"] == list(report_html.SECTIONS)
    assert facts["scripts"] == 0
