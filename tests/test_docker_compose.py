"""docker-compose.yml and the Dockerfile, checked by parsing (no Docker engine in CI)."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from backend.routing import QUEUES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _env(service: str) -> dict[str, str]:
    return SERVICES[service].get("environment", {})


def _command(service: str) -> list[str]:
    command = SERVICES[service].get("command", [])
    return shlex.split(command) if isinstance(command, str) else command


def test_every_role_is_deployed() -> None:
    assert {"postgres", "redis", "api", "worker-gpu", "dashboard"} <= set(SERVICES)


def test_app_services_share_database_broker_and_artifacts() -> None:
    app_services = ["api", "worker-gpu", "worker-cpu", "migrate"]
    urls = {(_env(s)["AIPO_DATABASE_URL"], _env(s)["AIPO_BROKER_URL"]) for s in app_services}
    assert len(urls) == 1
    database, broker = urls.pop()
    assert database.startswith("postgresql+psycopg://") and "@postgres:5432/" in database
    assert broker.startswith("redis://redis:6379/")
    for service in app_services:
        assert "aipo-data:/data" in SERVICES[service]["volumes"]
        assert _env(service)["AIPO_ARTIFACT_ROOT"].startswith("/data")


def test_workers_consume_every_queue_one_stage_at_a_time() -> None:
    consumed = set()
    for name in SERVICES:
        command = _command(name)
        if "worker" not in command:
            continue
        assert command[:4] == ["celery", "-A", "worker.celery_app", "worker"]
        assert command[command.index("--pool") + 1] == "solo"
        consumed |= set(command[command.index("-Q") + 1].split(","))
    assert consumed == set(QUEUES)
    # Celery's warm shutdown waits for the running stage before the container is killed.
    assert SERVICES["worker-gpu"]["stop_grace_period"] == "2m"
    gpu = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_api_starts_after_migrations_and_healthy_stores() -> None:
    assert SERVICES["migrate"]["command"] == ["aipo", "db", "upgrade"]
    assert SERVICES["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for store in ("postgres", "redis"):
        assert SERVICES["api"]["depends_on"][store]["condition"] == "service_healthy"
        assert SERVICES[store]["healthcheck"]["test"]
    assert _command("api")[:3] == ["uvicorn", "backend.app:create_app", "--factory"]
    assert _env("dashboard")["AIPO_API_URL"] == "http://api:8000"


def test_dockerfile_builds_the_package_with_pinned_torch() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "-c constraints.txt" in dockerfile
    for package in ("aipo_core", "aipo_cli", "backend", "worker", "dashboard", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile
    referenced = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    for path in referenced:
        assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"


def _published(service: str) -> list[str]:
    """`ports:` entries with compose's ${VAR:-default} resolved to their defaults."""
    import re

    return [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", entry) for entry in SERVICES[service].get("ports", [])]


def test_dashboard_asks_everyone_to_sign_in_and_holds_no_secrets() -> None:
    env = _env("dashboard")
    assert env == {"AIPO_API_URL": "http://api:8000", "AIPO_DASHBOARD_AUTH": "login"}
    assert not SERVICES["dashboard"]["volumes"]  # no $AIPO_HOME/token within reach either
    assert "AIPO_API_TOKEN" in _env("api")  # the operator's token stays with the API


def test_only_api_and_dashboard_are_published_and_on_loopback_by_default() -> None:
    assert _published("api") == ["127.0.0.1:8000:8000"]
    assert _published("dashboard") == ["127.0.0.1:8501:8501"]
    for service in SERVICES:
        if service not in ("api", "dashboard"):
            assert not SERVICES[service].get("ports"), f"{service} publishes a port"


def test_every_container_runs_with_a_private_umask() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint = next(line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT"))
    assert "umask 077" in entrypoint and 'exec \\"$0\\" \\"$@\\"' in entrypoint
    for service in SERVICES.values():
        assert "entrypoint" not in service  # nothing bypasses it


def test_gpu_worker_runs_the_gpu_image_with_the_extra() -> None:
    build = SERVICES["worker-gpu"]["build"]
    assert build["args"]["EXTRAS"] == "gpu" and "pypi.org" in build["args"]["TORCH_INDEX_URL"]
    assert SERVICES["worker-gpu"]["image"] != SERVICES["api"]["image"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'pip install -c constraints.txt ".${EXTRAS:+[$EXTRAS]}"' in dockerfile
    assert "vllm==0.32.0" in (ROOT / "constraints.txt").read_text()
