"""Throughput of ``lvd download`` against plain img2dataset, side by side on the same URL list.

A synthetic web is generated and served on localhost by a separate process (as a real web server
would be: not sharing the driver's interpreter); its pool images make the URL list. After one
uncounted warm-up, alternating (plain, lvd, plain, lvd, ...), each downloads the whole list into a
fresh folder:

* plain: ``img2dataset.download`` with exactly the arguments lvd passes it (same distributor,
  processes, threads, shard size, no re-encoding), reading the URL list directly;
* lvd: ``run_download`` end to end: reading and normalising the list, the network-safety checks
  (DNS resolution and address checks), host round-robin sharding, img2dataset with the guarded
  workers, then conversion of every shard to DOWNLOADED_SAMPLE and ENCODED_IMAGE parts.

Images/s is successful downloads over the wall-clock seconds of the whole call (img2dataset's
start-up included, for both; lvd's forkserver, started and stopped by each call, too). The best
and the median of ``--repeats`` runs of each are reported, and both ratios. Beside them, CPU
seconds per run: the driver (this process), the web server, and the rest of the machine (the
download workers; lvd's forkserver): where the time went (run it on an idle machine).

Usage: ``python benchmarks/bench_download.py [--n-pool 2000] [--processes 2] [--threads 16]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _plain(url_list: Path, out: Path, settings) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import img2dataset

    from curation.download.img2dataset_job import img2dataset_arguments

    arguments = img2dataset_arguments(settings, [])
    arguments["caption_col"] = None  # the list has no caption column
    img2dataset.download(
        url_list=str(url_list), output_folder=str(out), distributor="multiprocessing", **arguments
    )
    successes = 0
    for stats in out.glob("*_stats.json"):
        successes += json.loads(stats.read_text())["successes"]
    return successes


def _cpu_seconds(server_pid: int) -> tuple[float, float, float]:
    """CPU seconds (user + system) so far of this process (the driver: lvd's own work runs
    here), of the rest of the machine but the web server (img2dataset's worker processes and, for
    lvd, the forkserver they are forked from; other load too, so run on an idle machine) and of
    the web server process."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    driver = me.ru_utime + me.ru_stime
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()
    server = (int(fields[11]) + int(fields[12])) / ticks
    busy = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal: all but idle and iowait
    machine = sum(int(v) for i, v in enumerate(busy[:8]) if i not in (3, 4)) / ticks
    return driver, machine - driver - server, server


def _serve(root: Path, ready, stop) -> None:
    from curation.synth import SynthWebServer

    with SynthWebServer(root) as server:
        ready.put(server.base_url)
        stop.wait()


def _lvd(cfg) -> int:
    from curation.engines import get_engine
    from curation.jobs.download import run_download

    stats = run_download(cfg, get_engine("local", progress=False))
    return stats.get("status_success", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-pool", type=int, default=2000, help="pool originals in the web")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    args = parser.parse_args()

    from curation.jobs.config import CurationConfig
    from curation.synth import SynthConfig, generate_synthetic_web

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_download-"))
    web = generate_synthetic_web(
        workdir / "web",
        SynthConfig(
            n_pool=args.n_pool,
            n_near_duplicates=0,
            n_exact_duplicates=0,
            n_eval=10,
            n_eval_copies_in_pool=0,
        ),
        progress=False,
    )
    files = web.read("pool").column("file").to_pylist()
    results: dict[str, list[float]] = {"img2dataset": [], "lvd download": []}
    cpu_seconds: dict[str, list[list[float]]] = {name: [] for name in results}
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    server = context.Process(target=_serve, args=(web.root, ready, stop), daemon=True)
    server.start()
    try:
        base_url = ready.get(timeout=60)
        url_list = workdir / "urls.parquet"
        pq.write_table(pa.table({"url": [f"{base_url}/{f}" for f in files]}), url_list)
        base = CurationConfig(name="bench", runs_dir=workdir / "runs")
        settings = replace(
            base.download,
            url_list=str(url_list),
            allow_private_networks=True,  # the synthetic web is on localhost
            processes_count=args.processes,
            thread_count=args.threads,
            number_sample_per_shard=args.shard_size,
        )
        # Warm-up (not counted): the first img2dataset call pays for cold imports and caches.
        warm = workdir / "warmup.parquet"
        pq.write_table(pq.read_table(url_list).slice(0, 50), warm)
        _plain(warm, workdir / "warmup", replace(settings, url_list=str(warm)))
        for repeat in range(args.repeats):
            for name in results:
                out = workdir / f"{name.replace(' ', '_')}-{repeat}"
                shutil.rmtree(out, ignore_errors=True)
                cpu = _cpu_seconds(server.pid)
                start = time.perf_counter()
                if name == "img2dataset":
                    successes = _plain(url_list, out, settings)
                else:
                    cfg = replace(base, name=out.name, runs_dir=workdir, download=settings)
                    successes = _lvd(cfg)
                seconds = time.perf_counter() - start
                used = [after - before for after, before in zip(_cpu_seconds(server.pid), cpu)]
                cpu_seconds[name].append(used)
                if successes != len(files):
                    raise RuntimeError(f"{name}: {successes} of {len(files)} images downloaded")
                results[name].append(len(files) / seconds)
                print(
                    f"run {repeat + 1} {name:<13} {len(files)} images in {seconds:6.2f} s "
                    f"= {len(files) / seconds:7.1f} images/s; CPU s: driver {used[0]:.1f}, "
                    f"workers {used[1]:.1f}, web server {used[2]:.1f}",
                    flush=True,
                )
    finally:
        stop.set()
        server.join(timeout=30)
    best = {name: max(values) for name, values in results.items()}
    median = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"\n{len(files)} images, {args.processes} processes x {args.threads} threads, "
        f"shards of {args.shard_size} ({args.repeats} runs each, alternating)"
    )
    for name in best:
        cpu = [statistics.median(part) for part in zip(*cpu_seconds[name])]
        print(
            f"  {name:<13} best {best[name]:7.1f}, median {median[name]:7.1f} images/s; "
            f"median CPU s: driver {cpu[0]:.1f}, workers {cpu[1]:.1f}, web server {cpu[2]:.1f}"
        )
    for label, figures in (("best of", best), ("median", median)):
        ratio = figures["lvd download"] / figures["img2dataset"]
        print(f"  ratio lvd / img2dataset ({label}): {ratio:.3f}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
