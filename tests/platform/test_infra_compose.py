"""The production compose file (infra/docker-compose.yml) parses, and its serving container points at real things:
a ``landmark serve`` command that the CLI accepts, a healthcheck on a GET route of the serving app, on the port
the command binds and publishes, and the store's settings from the environment (Docker cannot run here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from landmark.cli import app as cli_app
from landmark.config import ServeConfig
from landmark.platform.storage import ENV_ACCESS_KEY, ENV_BUCKET, ENV_ENDPOINT, ENV_SECRET_KEY
from landmark.serving.api import ServingState, create_app
from landmark.serving.service import ModelSlot

INFRA = Path(__file__).resolve().parents[2] / "infra"
HEALTH_URL = re.compile(r"http://localhost:(\d+)(/[\w/.-]*)")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    assert isinstance(compose, dict) and isinstance(compose.get("services"), dict)
    return dict(compose["services"])


def option_value(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_every_service_is_well_formed(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on an unknown service {dependency!r}"


def test_serving_runs_the_pipeline_image(services: dict[str, Any]) -> None:
    serving, worker = services["serving"], services["prefect-worker"]
    assert serving["image"] == worker["image"] and serving["build"] == worker["build"]
    assert (INFRA.parent / serving["build"]["dockerfile"]).is_file()
    assert "EXPOSE 8080" in (INFRA / "Dockerfile").read_text()


def test_the_command_is_a_landmark_serve_the_cli_accepts(services: dict[str, Any]) -> None:
    args = shlex.split(services["serving"]["command"])
    assert args[:4] == ["landmark", "serve", "--host", "0.0.0.0"]
    command = typer.main.get_command(cli_app)
    serve = command.commands["serve"]  # type: ignore[attr-defined]
    accepted = {opt for param in serve.params for opt in param.opts}
    assert {a for a in args[2:] if a.startswith("--")} <= accepted
    ctx = serve.make_context("serve", args[2:])  # parses with the CLI's own option types
    assert ctx.params["host"] == "0.0.0.0"


def test_the_healthcheck_asks_a_real_route_on_the_served_port(services: dict[str, Any]) -> None:
    serving = services["serving"]
    args = shlex.split(serving["command"])
    port = int(option_value(args, "--port")) if "--port" in args else ServeConfig().port
    probe = " ".join(serving["healthcheck"]["test"])
    match = HEALTH_URL.search(probe)
    assert match is not None, probe
    assert int(match.group(1)) == port
    app = create_app(ServingState(ModelSlot(), ServeConfig()))
    get_routes = {route.path for route in app.routes if "GET" in getattr(route, "methods", set())}
    assert match.group(2) == "/healthz" and match.group(2) in get_routes
    published = [str(p).split(":")[-1] for p in serving["ports"]]
    assert str(port) in published


def test_store_settings_come_from_the_environment(services: dict[str, Any]) -> None:
    environment = services["serving"]["environment"]
    assert {ENV_ENDPOINT, ENV_BUCKET, ENV_ACCESS_KEY, ENV_SECRET_KEY} <= set(environment)
    for key in (ENV_ACCESS_KEY, ENV_SECRET_KEY):  # from infra/.env, never written in the file
        assert environment[key] == "${" + key + "}"
    assert environment[ENV_ENDPOINT] == "http://minio:9000" and "minio" in services
