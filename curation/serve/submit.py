"""Submitting a pipeline to a Ray cluster: the request checked, its config written, the job sent.

A request names a run and gives the pipeline config, as a mapping (nested, or with dotted keys
like ``download.url_list``) or as YAML text. The config is checked here against
:class:`~curation.jobs.config.CurationConfig` (unknown keys and wrong types are a 400, not a failed
job minutes later), then written to ``<runs root>/<run>/_submissions/<time>-<id>.yaml`` with the
run's ``name`` and ``runs_dir`` set by the service, and sent through the Ray Jobs API as

    python jobs/curate_ray.py --config <that file>      (runtime_env working_dir = the repo)

the README's ``ray job submit`` command (section "Cluster jobs"). The config lives in the run
folder rather than in a temp file because the job reads it on the cluster: the runs root is the one
place the service and the job must both reach (the job writes its outputs there), and the file
stays as the record of what was submitted.
"""

from __future__ import annotations

import json
import secrets
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from curation.config import ConfigError
from curation.io import write_bytes_atomic
from curation.safe_names import is_safe_component
from curation.serve.errors import HttpError
from curation.serve.runs import RunsRoot, check_name

REPO = Path(__file__).resolve().parents[2]
JOB_SCRIPT = "jobs/curate_ray.py"  # relative to the working dir Ray unpacks on the cluster
SUBMISSIONS = "_submissions"
RESERVED = ("name", "runs_dir")  # set by the service: the request's run, the served root
RUN_METADATA = "lvd_run"
_RAY_EXTRA = "submission needs the Ray Jobs SDK: pip install 'lvd[ray]'"


@dataclass(frozen=True)
class Submission:
    run: str
    overlay: dict[str, Any]  # the pipeline config as given, dotted keys expanded


def _merge_into(node: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key in node:
        if isinstance(node[key], dict) and isinstance(value, dict):
            for inner_key, inner in value.items():
                _merge_into(node[key], inner_key, inner, f"{where}.{key}")
            return
        raise HttpError(400, f"config key {where}.{key} is given twice")
    node[key] = value


def _nested(mapping: dict, where: str = "config") -> dict[str, Any]:
    """``{"download.url_list": x}`` -> ``{"download": {"url_list": x}}``, at every level."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise HttpError(400, f"config key {key!r} in {where} is not a string")
        if isinstance(value, dict):
            value = _nested(value, f"{where}.{key}")
        *parents, last = key.split(".")
        node, path = out, where
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise HttpError(400, f"config key {path}.{part} is a value and a section")
            node, path = child, f"{path}.{part}"
        _merge_into(node, last, value, path)
    return out


def _config_mapping(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, str):
        try:
            config = yaml.safe_load(config)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "cannot be parsed"
            raise HttpError(400, f"'config' is not valid YAML: {problem}") from None
        config = {} if config is None else config
    if not isinstance(config, dict):
        raise HttpError(400, "'config' must be a mapping of config keys or YAML text of one")
    return _nested(config)


def parse_submission(body: bytes) -> Submission:
    """The request body ``{"name": RUN, "config": MAPPING_OR_YAML}``, checked; a 400 otherwise."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the body is not JSON") from None
    if not isinstance(request, dict):
        raise HttpError(400, 'the body must be a JSON object {"name": ..., "config": ...}')
    unknown = sorted(set(request) - {"name", "config"})
    if unknown:
        raise HttpError(400, f"unknown field(s) {unknown}; a submission has 'name' and 'config'")
    run = request.get("name")
    if not isinstance(run, str):
        raise HttpError(400, "'name' (the run name) is required and must be a string")
    check_name(run, "run")
    overlay = _config_mapping(request.get("config"))
    reserved = [key for key in RESERVED if key in overlay]
    if reserved:
        raise HttpError(
            400,
            f"config may not set {reserved}: the run is the request's 'name' and runs_dir is "
            "this service's runs root",
        )
    from curation.config import load_config
    from curation.jobs.config import CurationConfig

    try:
        cfg = load_config(CurationConfig, base={**overlay, "name": run})
    except ConfigError as exc:  # unknown keys, wrong types, values out of range
        raise HttpError(400, f"config: {exc}") from None
    if cfg.download.url_list is None:
        raise HttpError(400, "config: download.url_list is required (a path read on the cluster)")
    return Submission(run, overlay)


def write_submission(runs: RunsRoot, submission: Submission) -> Path:
    """The job's config file in the run folder (created if new); its absolute path."""
    folder = runs.root / submission.run
    if folder.exists() or folder.is_symlink():
        folder = runs.run_folder(submission.run)  # 404 if it leads out of the root
    else:
        folder.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = folder / SUBMISSIONS / f"{stamp}-{secrets.token_hex(4)}.yaml"
    config = {"name": submission.run, "runs_dir": str(runs.root), **submission.overlay}
    write_bytes_atomic(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path


def discard_submission(runs: RunsRoot, config: Path) -> None:
    """Remove a config no job was started with, and the folders it alone made (if empty)."""
    config.unlink(missing_ok=True)
    for folder in (config.parent, config.parent.parent):
        if folder == runs.root:
            break
        try:
            folder.rmdir()
        except OSError:  # not empty: other submissions, or the run's own stages
            break


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_submission_possible(working_dir: Path = REPO) -> None:
    """At start-up, before serving: the Jobs SDK imports and the job script is there to send."""
    try:
        import ray.job_submission  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{_RAY_EXTRA} ({exc})") from exc
    if not (working_dir / JOB_SCRIPT).is_file():
        raise ConfigError(
            f"submission sends {working_dir} as the job's working dir, but it has no "
            f"{JOB_SCRIPT}: run lvd serve from a source checkout of lvd"
        )


class RayJobs:
    """The Ray Jobs API of one cluster. A client per call: creating one checks the connection,
    so a cluster that went away is a 502 on that request, not a stale client.

    ``ray_token`` is the cluster's own token (Ray's token authentication), sent as a bearer
    header; without it the client authenticates from its environment (``RAY_AUTH_MODE=token`` with
    ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``). It is not the service's token.
    """

    def __init__(self, address: str, ray_token: str | None = None, working_dir: Path = REPO):
        self.address = address
        self.ray_token = ray_token
        self.working_dir = working_dir

    def _client(self):
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError:
            raise HttpError(503, _RAY_EXTRA) from None
        headers = {"Authorization": f"Bearer {self.ray_token}"} if self.ray_token else None
        try:
            return JobSubmissionClient(self.address, headers=headers)
        except Exception as exc:  # the SDK raises a zoo: ConnectionError, RuntimeError, auth
            raise HttpError(
                502, f"the Ray cluster at {self.address} cannot be reached: {_one_line(exc)}"
            ) from None

    def submit(self, run: str, config: Path) -> str:
        """Send the curation job for ``run`` with ``config``; the job's submission id."""
        client = self._client()
        try:
            return client.submit_job(
                entrypoint=f"python {JOB_SCRIPT} --config {shlex.quote(str(config))}",
                runtime_env={"working_dir": str(self.working_dir)},
                metadata={RUN_METADATA: run},
            )
        except Exception as exc:  # refused by the cluster: say why, keep serving
            raise HttpError(502, f"the Ray cluster refused the job: {_one_line(exc)}") from None

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's status, message, times and run, as the cluster reports them."""
        if not is_safe_component(job_id):
            raise HttpError(400, f"{job_id!r} is not a Ray job id")
        client = self._client()
        try:
            info = client.get_job_info(job_id)
        except Exception as exc:
            # The SDK reports an unknown id as RuntimeError("... status code 404 ...").
            if "status code 404" in str(exc):
                raise HttpError(404, f"the Ray cluster has no job {job_id!r}") from None
            raise HttpError(502, f"the Ray cluster did not answer: {_one_line(exc)}") from None
        status = info.status
        return {
            "job_id": job_id,
            "status": getattr(status, "value", str(status)),
            "message": info.message,
            "run": (info.metadata or {}).get(RUN_METADATA),
            "entrypoint": info.entrypoint,
            "start_time": info.start_time,
            "end_time": info.end_time,
        }
