"""The Ray job as a user submits it: a real local Ray head (``ray start --head``, token
authentication on), the curation job sent through the Ray Jobs API, and the README's
``ray job submit`` command run as written.

The head is this module's own: its own temp dir and ports, stopped by terminating the ``ray start
--block`` process this test started (``ray stop`` would kill every Ray process on the machine,
the session's ``ray_runtime`` included).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from curation.rundir import RunDir
from curation.synth import SynthWebServer, write_url_list
from jobs.curate_ray import main as run_job_in_process
from tests.dedup_truth import SMALL_WEB_ALSO_CAUGHT, check_dedup, expected_dedup, ok_synth_keys

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the head, its jobs and the CLI run from this environment
# The README's placeholders, replaced by this test's head, config and URL list.
README_ADDRESS = "http://127.0.0.1:8265"
README_CONFIG = "my_run.yaml"
README_URL_LIST = "download.url_list=/data/urls.parquet"
JOB_SETTINGS = {
    "download": {
        "allow_private_networks": True,  # the synthetic web is served on 127.0.0.1
        "number_sample_per_shard": 50,
        "thread_count": 8,
    }
}
STAGES = ("download", "ingest", "phash", "dedup_exact", "dedup_near", "unique_images")


def test_ray_extra_brings_the_jobs_cli_and_sdk():
    """``pip install 'lvd[ray]'`` must give ``ray job submit`` and a head with the Jobs API."""
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (ray,) = [req for req in map(Requirement, extra["ray"]) if req.name == "ray"]
    assert {"data", "default"} <= ray.extras


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RayHead:
    address: str  # the dashboard's Jobs API
    token: str
    env: dict[str, str]  # what a client needs: the venv first on PATH, token mode, the token

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (this head's unique temp dir)."""
    pids = []
    if not Path("/proc").is_dir():  # not Linux: the process group is all there is to kill
        return pids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def _stop_head(process: subprocess.Popen, temp_dir: str) -> None:
    """Terminate the ``ray start --block`` process (it stops the head's processes), then kill
    whatever of this head is left: its process group, and processes naming its temp dir."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in _processes_mentioning(temp_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(require):
    """A local Ray head with 2 CPUs and token authentication, on free ports, stopped at the end."""
    require("ray.job_submission")  # the [ray] extra's ray[default] part
    ray_cli = VENV_BIN / "ray"
    if not ray_cli.exists():
        pytest.fail(f"{ray_cli} does not exist; install the [ray] extra", pytrace=False)
    # Short: Ray's unix socket paths live under it (at most 107 characters).
    temp_dir = tempfile.mkdtemp(prefix="lvdray-", dir="/tmp" if Path("/tmp").is_dir() else None)
    token = secrets.token_hex(32)
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
    )
    dashboard_port = free_port()
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard_port,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
    }
    command = [
        str(ray_cli),
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    log_path = Path(temp_dir) / "ray_start.log"
    # No draining on SIGTERM: nothing runs on the head by then (Ray would wait up to 30 s).
    head_env = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env=head_env, cwd=temp_dir, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    head = RayHead(f"http://127.0.0.1:{dashboard_port}", token, env)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"ray start exited: {log_path.read_text()[-2000:]}", pytrace=False)
            try:
                head.client().list_jobs()
                break
            except Exception:  # not listening yet
                if time.monotonic() > deadline:
                    pytest.fail(f"no Ray head after 90 s: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
        yield head
    finally:
        _stop_head(process, temp_dir)


@pytest.fixture(scope="module")
def served_web(small_web, tmp_path_factory):
    """The small synthetic web on 127.0.0.1 and its URL list."""
    urls = tmp_path_factory.mktemp("urls") / "urls.parquet"
    with SynthWebServer(small_web.root) as server:
        write_url_list(small_web, server.base_url, urls, include_bad=False, slow=False)
        yield urls


def _run_config(path: Path, runs_dir: Path, name: str, urls: Path | None = None) -> Path:
    """A run's YAML overlay (absolute paths: the job reads it on the cluster)."""
    settings = {"runs_dir": str(runs_dir), "name": name, **JOB_SETTINGS}
    if urls is not None:
        settings["download"] = {**settings["download"], "url_list": str(urls)}
    path.write_text(yaml.safe_dump(settings))
    return path


def _wait(client, job_id: str, seconds: float = 240):
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + seconds
    while not (status := client.get_job_status(job_id)).is_terminal():
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {seconds} s")
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    return logs


def _kept_keys(run: RunDir) -> dict[str, list[str]]:
    """Per stage, the sorted keys of its output rows (and the ok rows for ingest)."""
    keys = {
        stage: sorted(pq.read_table(run.stage(stage).outputs(), columns=["key"])["key"].to_pylist())
        for stage in ("download", "unique_images")
    }
    keys["ingest_ok"] = sorted(ok_synth_keys(run))
    return keys


@pytest.fixture(scope="module")
def cluster_run(ray_head, served_web, tmp_path_factory):
    """The curation job submitted through the Jobs API (``JobSubmissionClient``) on the synthetic
    web: its run folder, its printed stats and its config file."""
    folder = tmp_path_factory.mktemp("cluster")
    config = _run_config(folder / "run.yaml", folder / "runs", "cluster", served_web)
    client = ray_head.client()
    job_id = client.submit_job(
        entrypoint=f"python jobs/curate_ray.py --config {config}",
        runtime_env={"working_dir": str(REPO)},
    )
    logs = _wait(client, job_id)
    # The job joined this head (RAY_ADDRESS), not a Ray of its own.
    assert "Connecting to existing Ray cluster" in logs, logs[-3000:]
    assert "Started a local Ray instance" not in logs
    stats = json.loads(logs[logs.rindex("\n{\n") :])  # the job prints its stats last
    return RunDir(folder / "runs" / "cluster"), stats, config


def test_job_api_submission_matches_the_in_process_job(cluster_run, small_web, ray_runtime):
    cluster, stats, config = cluster_run
    assert stats["download"]["engine"] == "ray"
    assert stats["download"]["status_success"] == small_web.config.n_served_pool
    for stage in STAGES:
        assert cluster.stage(stage).is_complete(), stage
    # The same dedup as the ground truth requires of the in-process job (test_curate_ray.py) ...
    expected = expected_dedup(small_web.read("pool"), ok_synth_keys(cluster), SMALL_WEB_ALSO_CAUGHT)
    check_dedup(cluster, expected)
    # ... and the same rows as that job run here, in this process, on the same config.
    assert run_job_in_process([f"--config={config}", "name=in_process"]) == 0
    local = RunDir(cluster.root.parent / "in_process")
    assert _kept_keys(cluster) == _kept_keys(local)
    for stage in STAGES[1:]:
        assert (
            cluster.stage(stage).read_stats()["rows_out"]
            == local.stage(stage).read_stats()["rows_out"]
        ), stage


def _readme_submit_command() -> list[str]:
    """The ``ray job submit`` command of README.md's "Cluster jobs" section, continuation lines
    joined, split as a shell would."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Cluster jobs") :]
    match = re.search(r"^ray job submit .*?(?<!\\)$", section, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md's Cluster jobs section has no `ray job submit` command"
    return shlex.split(match.group(0).replace("\\\n", " "), comments=True)


def _readme_command_for(head: RayHead, config: Path, urls: Path) -> list[str]:
    command = _readme_submit_command()
    replacements = {
        README_ADDRESS: head.address,
        README_CONFIG: str(config),
        README_URL_LIST: f"download.url_list={urls}",
    }
    for placeholder in replacements:
        assert placeholder in command, f"the README's command lost {placeholder!r}: {command}"
    return [replacements.get(word, word) for word in command]


def test_readme_command_runs_as_written_and_resumes(ray_head, cluster_run, served_web):
    run, _, config = cluster_run
    command = _readme_command_for(ray_head, config, served_web)
    # The README's command on the cluster's finished run: the job runs, finds every stage
    # complete and rewrites nothing.
    before = sorted((p, p.stat().st_mtime_ns) for p in run.root.rglob("*.parquet"))
    assert before
    done = subprocess.run(
        command, cwd=REPO, env=ray_head.env, capture_output=True, text=True, timeout=240
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", output), output[-3000:]
    assert '"status_success": ' in output  # the job's stats, streamed back by the CLI
    assert sorted((p, p.stat().st_mtime_ns) for p in run.root.rglob("*.parquet")) == before
    # Without RAY_AUTH_MODE=token the client sends no token and the head refuses the job.
    env = {name: value for name, value in ray_head.env.items() if name != "RAY_AUTH_MODE"}
    submit = command[: command.index("--")]
    refused = subprocess.run(
        [*submit, "--no-wait", "--", "python", "-c", "pass"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "Missing authentication token" in refused.stdout + refused.stderr
