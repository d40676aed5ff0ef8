"""``lvd serve`` over real HTTP: a server on a free port in a thread, requests sent as written
(``http.client`` does not normalise ``..``), a small run folder built here.

Submission goes to a fake ``ray.job_submission`` module that records what it got; one test sends
a real job to a real local Ray head (the fixture of ``tests/jobs/test_ray_job_submit.py``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from curation.cli import build_parser, main
from curation.config import ConfigError, load_config
from curation.jobs.config import CurationConfig
from curation.serve.app import ServeConfig, make_server
from curation.serve.auth import TOKEN_ENV, load_token
from curation.serve.runs import RunsRoot
from curation.serve.submit import REPO, SUBMISSIONS, RayJobs

TOKEN = "serve-test-token-0123456789abcdef"
RAY_TOKEN = "ray-cluster-token-fedcba9876543210"
SECRET = "TOP-SECRET-outside-the-runs-root"
DOWNLOAD_STATS = {"stage": "download", "rows_in": 12, "rows_out": 10, "status_success": 10}
INGEST_STATS = {"stage": "ingest", "rows_in": 10, "rows_out": 7, "dropped_too_small": 3}
MANIFEST = {"num_samples": 7, "shards": [{"path": "shards/shard-000000.tar", "samples": 7}]}
REPORT = "<!doctype html><html><body><h1>crawl</h1></body></html>\n"


# ----- a runs root with one finished-looking run, one empty run, and ways out of the root


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def runs(tmp_path) -> Path:
    outside = tmp_path / "outside"
    (outside / "stage").mkdir(parents=True)
    (outside / "passwd").write_text(SECRET)
    (outside / "secret").write_text(SECRET)
    _json(outside / "stage" / "_stats.json", {"secret": SECRET})
    _json(outside / "manifest.json", {"secret": SECRET})

    root = tmp_path / "runs"
    crawl = root / "crawl"
    _json(crawl / "download" / "_stats.json", DOWNLOAD_STATS)
    (crawl / "download" / "_SUCCESS").write_bytes(b"")
    (crawl / "download" / "part-000000.parquet").write_bytes(b"PAR1")
    _json(crawl / "ingest" / "_stats.json", INGEST_STATS)  # stats, no marker yet
    _json(crawl / "ingest" / "_shards" / "part-000000.json", {"seconds": 1.0})
    (crawl / "retrieve").mkdir()
    (crawl / "retrieve" / "_config.yaml").write_text("k: 1\n")  # started nothing yet
    (crawl / "_shards").mkdir()  # metadata, not a stage
    (crawl / "_config.yaml").write_text("name: crawl\n")
    (crawl / "report.html").write_text(REPORT)
    _json(crawl / "manifest.json", MANIFEST)
    (crawl / "leak").symlink_to(outside / "stage")  # a stage leading out of the root
    (root / "empty").mkdir()
    (root / "escape").symlink_to(outside)  # a run leading out of the root
    leaky = root / "leaky"
    leaky.mkdir()
    (leaky / "report.html").symlink_to(outside / "secret")
    (leaky / "manifest.json").symlink_to(outside / "manifest.json")
    (root / "_scratch").mkdir()  # metadata at the root: not a run
    return root


# ----- a server in a thread, and raw requests to it


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        assert self.headers["Content-Type"] == "application/json", self.headers
        return json.loads(self.body)


@contextlib.contextmanager
def serving(config: ServeConfig):
    server = make_server(config, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def send(port: int, method: str, path: str, body=None, headers=None) -> Response:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        try:
            connection.request(method, path, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered a refused body and stopped reading: its answer is there
        answer = connection.getresponse()
        return Response(answer.status, answer.headers, answer.read())
    finally:
        connection.close()


def submit(port: int, payload, token: str | None = TOKEN, scheme: str = "Bearer") -> Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    return send(port, "POST", "/submit", body, headers)


# ----- a fake Ray Jobs SDK that records what the service sent


class FakeStatus:
    def __init__(self, value: str):
        self.value = value


class FakeJobs:
    """Stands in for ``ray.job_submission``: each client records its address and headers, each
    submission its arguments."""

    def __init__(self, fail_connect: Exception | None = None):
        self.clients: list[dict] = []
        self.submitted: list[dict] = []
        self.fail_connect = fail_connect
        fake = self

        class JobSubmissionClient:
            def __init__(self, address=None, headers=None, **kwargs):
                fake.clients.append({"address": address, "headers": headers, **kwargs})
                if fake.fail_connect is not None:
                    raise fake.fail_connect

            def submit_job(self, **kwargs):
                fake.submitted.append(kwargs)
                return f"raysubmit_fake{len(fake.submitted)}"

            def get_job_info(self, job_id):
                for number, job in enumerate(fake.submitted, 1):
                    if job_id == f"raysubmit_fake{number}":
                        return types.SimpleNamespace(
                            status=FakeStatus("RUNNING"),
                            message="Job is currently running.",
                            metadata=job.get("metadata"),
                            entrypoint=job["entrypoint"],
                            start_time=1700000000000,
                            end_time=None,
                        )
                raise RuntimeError(
                    f"Request failed with status code 404: Job {job_id} does not exist."
                )

        self.module = types.ModuleType("ray.job_submission")
        self.module.JobSubmissionClient = JobSubmissionClient


@pytest.fixture
def fake_jobs(monkeypatch) -> FakeJobs:
    fake = FakeJobs()
    monkeypatch.setitem(sys.modules, "ray.job_submission", fake.module)
    return fake


def config_for(runs: Path, token: str | None = TOKEN) -> ServeConfig:
    return ServeConfig(RunsRoot(runs), token, RayJobs("http://127.0.0.1:8265", RAY_TOKEN))


# ----- read-only views


def test_lists_every_run_with_stage_status_and_counts(runs):
    with serving(config_for(runs)) as port:
        answer = send(port, "GET", "/runs")
    assert answer.status == 200
    listed = answer.json()["runs"]
    # The symlink leading out of the root and the metadata folder are not runs.
    assert [run["name"] for run in listed] == ["crawl", "empty", "leaky"]
    crawl = listed[0]
    assert crawl["stages"] == [
        {"name": "download", "status": "complete", "rows_in": 12, "rows_out": 10},
        {"name": "ingest", "status": "in_progress", "rows_in": 10, "rows_out": 7},
        {"name": "retrieve", "status": "not_started", "rows_in": None, "rows_out": None},
    ]  # no "leak" (outside the root), no "_shards" (metadata)
    assert crawl["report"] is True and crawl["manifest"] is True and crawl["complete"] is False
    assert listed[1] == {
        "name": "empty", "stages": [], "complete": False, "report": False, "manifest": False,
    }  # fmt: skip
    # leaky's report and manifest lead out of the root: they do not count as there
    assert listed[2]["report"] is False and listed[2]["manifest"] is False


def test_a_run_shows_each_stage_with_its_whole_stats(runs):
    (runs / "crawl" / "ingest" / "_SUCCESS").write_bytes(b"")
    with serving(config_for(runs)) as port:
        detail = send(port, "GET", "/runs/crawl").json()
        missing = send(port, "GET", "/runs/nope")
    assert detail["name"] == "crawl"
    assert {stage["name"]: stage["stats"] for stage in detail["stages"]} == {
        "download": DOWNLOAD_STATS,
        "ingest": INGEST_STATS,
        "retrieve": None,
    }
    assert [stage["status"] for stage in detail["stages"]] == ["complete"] * 2 + ["not_started"]
    assert missing.status == 404 and missing.json() == {"error": "no run 'nope'"}


def test_stats_are_served_as_written(runs):
    with serving(config_for(runs)) as port:
        stats = send(port, "GET", "/runs/crawl/stats/download")
        no_stats = send(port, "GET", "/runs/crawl/stats/retrieve")
        no_stage = send(port, "GET", "/runs/crawl/stats/shards")
    assert stats.status == 200 and stats.headers["Content-Type"] == "application/json"
    assert stats.body == (runs / "crawl" / "download" / "_stats.json").read_bytes()
    assert no_stats.status == 404 and "no _stats.json" in no_stats.json()["error"]
    assert no_stage.status == 404 and "no stage 'shards'" in no_stage.json()["error"]


def test_report_and_manifest_with_their_content_types(runs):
    with serving(config_for(runs)) as port:
        report = send(port, "GET", "/runs/crawl/report")
        manifest = send(port, "GET", "/runs/crawl/manifest")
        no_report = send(port, "GET", "/runs/empty/report")
        no_manifest = send(port, "GET", "/runs/empty/manifest/")
    assert report.status == 200
    assert report.headers["Content-Type"] == "text/html; charset=utf-8"
    assert report.body.decode() == REPORT
    assert "default-src 'none'" in report.headers["Content-Security-Policy"]
    assert manifest.status == 200 and manifest.json() == MANIFEST
    assert no_report.status == 404 and no_report.json() == {
        "error": "run 'empty' has no report.html"
    }
    assert no_manifest.status == 404 and "manifest.json" in no_manifest.json()["error"]


def test_unknown_routes_and_methods_answer_json(runs):
    with serving(config_for(runs)) as port:
        unknown = send(port, "GET", "/runs/crawl/secrets")
        put = send(port, "PUT", "/runs")
        post_runs = send(port, "POST", "/runs", b"{}", {"Content-Length": "2"})
        get_submit = send(port, "GET", "/submit")
        index = send(port, "GET", "/")
    assert unknown.status == 404 and "GET /runs" in unknown.json()["error"]
    assert put.status == 501 and "PUT" in put.json()["error"]
    assert post_runs.status == 405 and post_runs.headers["Allow"] == "GET"
    assert get_submit.status == 405 and get_submit.headers["Allow"] == "POST"
    assert index.json()["submission"] == "enabled"
    for answer in (unknown, put, post_runs, get_submit):
        assert answer.headers["Server"] == "lvd-serve"  # no Python version


TRAVERSALS = [
    "/runs/..%2f..%2fetc/stats/passwd",
    "/runs/..%2F..%2Foutside/stats/passwd",
    "/runs/x/stats/../../secret",
    "/runs/crawl/stats/..",
    "/runs/%2e%2e/manifest",
    "/runs/crawl/stats/%2e%2e%2f%2e%2e%2f..%2foutside%2fstage",
    "/runs/%2Fetc%2Fpasswd/manifest",
    "/runs//etc/passwd",
    "/runs/crawl%00/manifest",
    "/runs/.hidden/manifest",
    "/runs/_scratch",
    "/runs/%ff/manifest",
    "/runs/escape",  # a run symlinked out of the root
    "/runs/escape/manifest",
    "/runs/escape/stats/stage",
    "/runs/crawl/stats/leak",  # a stage symlinked out of the root
    "/runs/leaky/report",  # a report symlinked out of the root
    "/runs/leaky/manifest",
    "http://127.0.0.1/runs/escape/manifest",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_path_reaches_outside_the_runs_root(runs, path):
    with serving(config_for(runs)) as port:
        answer = send(port, "GET", path)
    assert answer.status in (400, 404), (answer.status, answer.body)
    assert SECRET.encode() not in answer.body
    assert set(answer.json()) == {"error"}
    assert "Traceback" not in answer.body.decode()


def test_a_run_symlinked_inside_the_root_is_served(runs):
    (runs / "alias").symlink_to(runs / "crawl")
    with serving(config_for(runs)) as port:
        assert send(port, "GET", "/runs/alias/manifest").json() == MANIFEST


def test_a_bug_is_a_bare_500_with_no_traceback(runs, monkeypatch):
    def broken(self):
        raise KeyError("internal detail")

    monkeypatch.setattr(RunsRoot, "list_runs", broken)
    with serving(config_for(runs)) as port:
        answer = send(port, "GET", "/runs")
    assert answer.status == 500
    assert "internal detail" not in answer.body.decode() and "Traceback" not in answer.body.decode()
    assert set(answer.json()) == {"error"}


# ----- submission


GOOD_CONFIG = {
    "download.url_list": "/data/urls.parquet",
    "download": {"thread_count": 4},
    "ingest": {"min_side": 64},
}


def test_read_only_service_refuses_every_submission(runs, fake_jobs):
    with serving(config_for(runs, token=None)) as port:
        no_header = submit(port, {"name": "new", "config": GOOD_CONFIG}, token=None)
        with_header = submit(port, {"name": "new", "config": GOOD_CONFIG})
        index = send(port, "GET", "/").json()
    for answer in (no_header, with_header):
        assert answer.status == 403
        assert "read-only" in answer.json()["error"]
    assert index["submission"] == "disabled (read-only)"
    assert fake_jobs.clients == [] and fake_jobs.submitted == []
    assert not (runs / "new").exists()


@pytest.mark.parametrize(
    "token, scheme",
    [
        (None, "Bearer"),
        (TOKEN[:-1] + "0", "Bearer"),
        (TOKEN + "x", "Bearer"),
        (TOKEN, "Basic"),
        ("", "Bearer"),
    ],
)
def test_a_missing_or_wrong_token_is_refused(runs, fake_jobs, token, scheme):
    with serving(config_for(runs)) as port:
        answer = submit(port, {"name": "new", "config": GOOD_CONFIG}, token=token, scheme=scheme)
    assert answer.status == 401, answer.body
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in answer.body.decode()
    assert fake_jobs.clients == [] and fake_jobs.submitted == []
    assert not (runs / "new").exists()


def test_a_submission_reaches_the_ray_jobs_api(runs, fake_jobs):
    with serving(config_for(runs)) as port:
        answer = submit(port, {"name": "new_run", "config": GOOD_CONFIG})
        assert answer.status == 202, answer.body
        sent = answer.json()
        status = send(port, "GET", f"/jobs/{sent['job_id']}")
        unknown = send(port, "GET", "/jobs/raysubmit_nothing")
    assert sent["job_id"] == "raysubmit_fake1" and sent["run"] == "new_run"
    assert sent["status"] == "/jobs/raysubmit_fake1"
    # The client: the configured cluster, with the cluster's token (not the service's).
    assert fake_jobs.clients[0]["address"] == "http://127.0.0.1:8265"
    assert fake_jobs.clients[0]["headers"] == {"Authorization": f"Bearer {RAY_TOKEN}"}
    # The job: the README's command, the repo as working dir, the config in the run folder.
    (job,) = fake_jobs.submitted
    config = runs.resolve() / sent["config"]
    assert config.parent == runs.resolve() / "new_run" / SUBMISSIONS
    assert job["entrypoint"] == f"python jobs/curate_ray.py --config {config}"
    assert job["runtime_env"] == {"working_dir": str(REPO)}
    assert (Path(job["runtime_env"]["working_dir"]) / "jobs" / "curate_ray.py").is_file()
    assert job["metadata"] == {"lvd_run": "new_run"}
    assert yaml.safe_load(config.read_text()) == {
        "name": "new_run",
        "runs_dir": str(runs.resolve()),
        "download": {"url_list": "/data/urls.parquet", "thread_count": 4},
        "ingest": {"min_side": 64},
    }
    # What the job will load: its run folder is the one the service shows.
    cfg = load_config(CurationConfig, [config], ["engine.name=ray"])
    assert Path(cfg.run_dir.root) == runs.resolve() / "new_run"
    assert status.status == 200
    assert status.json() == {
        "job_id": "raysubmit_fake1",
        "status": "RUNNING",
        "message": "Job is currently running.",
        "run": "new_run",
        "entrypoint": job["entrypoint"],
        "start_time": 1700000000000,
        "end_time": None,
    }
    assert unknown.status == 404 and "raysubmit_nothing" in unknown.json()["error"]


def test_a_yaml_config_is_accepted_and_resubmission_keeps_both(runs, fake_jobs):
    text = "download:\n  url_list: /data/urls.parquet\nengine:\n  name: ray\n"
    with serving(config_for(runs)) as port:
        first = submit(port, {"name": "crawl", "config": text}).json()
        second = submit(port, {"name": "crawl", "config": text}).json()
    assert first["config"] != second["config"]
    written = sorted((runs / "crawl" / SUBMISSIONS).iterdir())
    assert len(written) == 2 and len(fake_jobs.submitted) == 2
    assert yaml.safe_load(written[0].read_text())["engine"] == {"name": "ray"}
    with serving(config_for(runs)) as port:  # the submissions folder is not a stage
        stages = send(port, "GET", "/runs/crawl").json()["stages"]
    assert SUBMISSIONS not in [stage["name"] for stage in stages]


@pytest.mark.parametrize(
    "payload, status, expect",
    [
        (b"not json", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        ({"config": GOOD_CONFIG}, 400, "'name'"),
        ({"name": "../escape", "config": GOOD_CONFIG}, 400, "not a valid name"),
        ({"name": "/etc", "config": GOOD_CONFIG}, 400, "not a valid name"),
        ({"name": "ok", "config": GOOD_CONFIG, "extra": 1}, 400, "'extra'"),
        ({"name": "ok", "config": {"download.url_lst": "/x"}}, 400, "download.url_lst"),
        (
            {"name": "ok", "config": {"download.url_list": "/x", "rows_per_shard": "many"}},
            400,
            "rows_per_shard",
        ),
        (
            {"name": "ok", "config": {"download.thread_count": 4}},
            400,
            "download.url_list is required",
        ),
        ({"name": "ok", "config": {**GOOD_CONFIG, "runs_dir": "/tmp"}}, 400, "runs_dir"),
        ({"name": "ok", "config": {**GOOD_CONFIG, "name": "other"}}, 400, "'name'"),
        ({"name": "ok", "config": "download: [unclosed"}, 400, "not valid YAML"),
        ({"name": "ok", "config": "- a list"}, 400, "must be a mapping"),
        ({"name": "ok", "config": {"download": 3, "download.url_list": "/x"}}, 400, "download"),
    ],
)
def test_a_bad_submission_is_a_400_before_any_job(runs, fake_jobs, payload, status, expect):
    with serving(config_for(runs)) as port:
        answer = submit(port, payload)
    assert answer.status == status, answer.body
    assert expect in answer.json()["error"]
    assert fake_jobs.submitted == []
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        ["crawl", "empty", "escape", "leaky", "_scratch"]
    )


def test_a_body_too_large_or_without_a_length_is_refused_unread(runs, fake_jobs):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(config_for(runs)) as port:
        large = send(port, "POST", "/submit", b"{}", {**auth, "Content-Length": str(2 << 20)})
        chunked = send(port, "POST", "/submit", iter([b"{}"]), auth)  # http.client: chunked
    assert large.status == 413 and "over 1048576 bytes" in large.json()["error"]
    assert chunked.status == 411
    assert fake_jobs.submitted == []


def test_a_submission_to_a_run_leading_outside_is_refused(runs, fake_jobs):
    with serving(config_for(runs)) as port:
        answer = submit(port, {"name": "escape", "config": GOOD_CONFIG})
    assert answer.status == 404
    assert fake_jobs.submitted == [] and not (runs / "escape" / SUBMISSIONS).exists()


def test_an_unreachable_cluster_is_a_502_and_leaves_nothing(runs, fake_jobs):
    fake_jobs.fail_connect = ConnectionError("Failed to connect to Ray at address: x.")
    with serving(config_for(runs)) as port:
        new = submit(port, {"name": "new", "config": GOOD_CONFIG})
        old = submit(port, {"name": "crawl", "config": GOOD_CONFIG})
        status = send(port, "GET", "/jobs/raysubmit_x")
    for answer in (new, old, status):
        assert answer.status == 502, answer.body
        assert "Failed to connect" in answer.json()["error"]
    assert not (runs / "new").exists()  # the run folder it made is gone again
    assert not (runs / "crawl" / SUBMISSIONS).exists()
    assert (runs / "crawl" / "download").is_dir()  # and the run it did not make is untouched


def test_a_job_id_is_one_safe_name(runs, fake_jobs):
    with serving(config_for(runs)) as port:
        answer = send(port, "GET", "/jobs/..%2fapi%2fjobs")
    assert answer.status == 400 and fake_jobs.clients == []


# ----- the token and the command line


def test_token_from_env_must_be_long_enough(monkeypatch, tmp_path):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert load_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, f"  {TOKEN}\n")
    assert load_token(None) == TOKEN
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_token(None)
    file = tmp_path / "token"
    file.write_text(RAY_TOKEN + "\n")
    assert load_token(file) == RAY_TOKEN  # the file wins over the environment


def test_the_command_refuses_a_missing_runs_root_in_one_line(tmp_path, capsys):
    assert main(["serve", "--runs", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().endswith("does not exist")


def test_listens_on_localhost_by_default():
    ns = build_parser().parse_args(["serve", "--runs", "runs"])
    assert (ns.host, ns.port, ns.token_file) == ("127.0.0.1", 8000, None)


def test_the_command_serves_until_interrupted(runs, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "curation.cli", "serve", "--runs", str(runs), "--port", "0"]
    process = subprocess.Popen(
        [*command, "--token-file", str(token_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.startswith("lvd serve: "), line + process.stderr.read()
        assert "on http://127.0.0.1:" in line and "submits to Ray" in line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        assert [run["name"] for run in send(port, "GET", "/runs").json()["runs"]] == [
            "crawl", "empty", "leaky",
        ]  # fmt: skip
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, process.stderr.read()


# ----- a real job on a real Ray head


try:  # the module-scoped head of the Ray job tests: token auth, free ports, stopped safely
    from tests.jobs.test_ray_job_submit import ray_head  # noqa: F401
except ImportError:  # its imports need the Ray and test extras: no real-head test then
    ray_head = None


@pytest.mark.skipif(ray_head is None, reason="tests.jobs.test_ray_job_submit is not importable")
def test_a_real_submission_runs_on_a_ray_head(runs, ray_head, tmp_path):  # noqa: F811
    """The job is sent with the cluster's token, unpacks the repo, reads the config the service
    wrote and stops at the URL list that does not exist: the whole path, without a crawl."""
    missing = tmp_path / "no_such_urls.parquet"
    jobs = RayJobs(ray_head.address, ray_head.token)
    config = ServeConfig(RunsRoot(runs), TOKEN, jobs)
    with serving(config) as port:
        answer = submit(port, {"name": "real", "config": {"download.url_list": str(missing)}})
        assert answer.status == 202, answer.body
        job_id = answer.json()["job_id"]
        deadline = time.monotonic() + 120
        while (status := send(port, "GET", f"/jobs/{job_id}").json())["status"] not in (
            "SUCCEEDED", "FAILED", "STOPPED",
        ):  # fmt: skip
            assert time.monotonic() < deadline, status
            time.sleep(1)
        unknown = send(port, "GET", "/jobs/raysubmit_doesnotexist")
    logs = ray_head.client().get_job_logs(job_id)
    assert status["status"] == "FAILED" and status["run"] == "real", (status, logs[-2000:])
    assert "curate_ray: error:" in logs and str(missing) in logs, logs[-2000:]
    assert unknown.status == 404
