"""docker/ cannot be run here (no Docker engine), so its files are checked against the code that reads them."""

from __future__ import annotations

import re
import shlex
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from support.harness import REPO
from typer.testing import CliRunner

from broker.cli.main import app
from broker.settings import ENV_PREFIX, Settings, setting_env_names
from broker.store.database import normalise_url

DOCKER = REPO / "docker"
ENV_REFERENCE = re.compile(r"\$\{([A-Z0-9_]+)(?::[-?][^}]*)?\}")
#: Adapter settings that name an environment variable holding a secret.
SECRET_KEYS = {"secret_env", "password_env"}


def compose() -> dict[str, Any]:
    document = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def env_names_in(node: Any, key: object = None) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(env_names_in(value, name) for name, value in node.items()))
    if isinstance(node, list):
        return set().union(*(env_names_in(item) for item in node))
    if isinstance(node, str):
        return {node} if key in SECRET_KEYS else set(ENV_REFERENCE.findall(node))
    return set()


def mapping_env_names() -> set[str]:
    """Environment variables the shipped mappings read: ${NAME} in values, and secret_env/password_env names."""
    return set().union(*(env_names_in(yaml.safe_load(path.read_text())) for path in (REPO / "mappings").glob("*.yaml")))


def names_the_code_reads() -> set[str]:
    return setting_env_names() | mapping_env_names()


def resolve(value: str) -> str:
    """Expand ${NAME:-default} the way Compose does when NAME is unset, and ${NAME:?message} (which Compose refuses
    to start without) as if the operator had set NAME to ``operator-<name>``."""
    value = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{([A-Z0-9_]+):\?[^}]*\}", lambda found: f"operator-{found.group(1).lower()}", value)


def broker_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose()["services"].items()
            if (service.get("command") or [""])[0] == "broker"}


def settings_from(environment: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in environment.items():
        monkeypatch.setenv(key, resolve(str(value)))
    return Settings()


def cli_accepts(arguments: list[str]) -> bool:
    return CliRunner().invoke(app, [*arguments, "--help"]).exit_code == 0


def test_compose_has_every_part_of_a_deployment() -> None:
    services = compose()["services"]
    assert {"rabbitmq", "postgres", "sftp", "migrate", "api", "worker", "scheduler"} <= set(services)
    assert services["api"]["command"] == ["broker", "api"]
    assert services["worker"]["command"] == ["broker", "worker"]
    assert services["scheduler"]["command"] == ["broker", "scheduler"]
    assert services["migrate"]["command"] == ["broker", "db", "upgrade"]
    assert set(broker_services()) == {"migrate", "api", "worker", "scheduler"}


def test_rabbitmq_and_postgres_have_healthchecks() -> None:
    services = compose()["services"]
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.13-management")
    assert services["postgres"]["image"].split(":")[1].split(".")[0] == "16"
    for name in ("rabbitmq", "postgres"):
        assert services[name]["healthcheck"]["test"], name
        assert not services[name]["healthcheck"].get("disable", False), name
    assert services["postgres"]["environment"]["POSTGRES_USER"] == "casebridge"
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "casebridge"


@pytest.mark.parametrize("service", ["api", "worker", "scheduler"])
def test_broker_processes_wait_for_services_and_the_migration(service: str) -> None:
    depends = compose()["services"][service]["depends_on"]
    assert depends["rabbitmq"]["condition"] == "service_healthy"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_the_migration_runs_once_after_postgres_is_healthy() -> None:
    migrate = compose()["services"]["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart") == "no"
    assert "deploy" not in migrate


def test_every_broker_process_shares_one_environment() -> None:
    """One environment for every process, but for the port each headless one serves its metrics and health on."""
    own = {f"{ENV_PREFIX}METRICS_PORT"}
    environments = [{key: value for key, value in service["environment"].items() if key not in own}
                    for service in broker_services().values()]
    assert all(environment == environments[0] for environment in environments)
    assert compose()["x-casebridge-env"] == environments[0]


def test_every_casebridge_variable_set_is_one_the_code_reads() -> None:
    known = names_the_code_reads()
    for name, service in broker_services().items():
        settings = set(service["environment"])
        unknown = {key for key in settings if key.startswith(ENV_PREFIX)} - known
        assert unknown == set(), f"{name} sets variables nothing reads: {unknown}"
        assert {f"{ENV_PREFIX}DATABASE_URL", f"{ENV_PREFIX}AMQP_URL", f"{ENV_PREFIX}HTTP_HOST"} <= settings


def test_every_variable_the_mappings_read_is_set() -> None:
    # Otherwise a container quietly uses the mappings' defaults, which point at 127.0.0.1 demo stand-ins.
    assert mapping_env_names(), "the shipped mappings read no environment variables"
    missing = mapping_env_names() - set(compose()["x-casebridge-env"])
    assert missing == set()


@pytest.mark.parametrize("service", ["migrate", "api", "worker", "scheduler"])
def test_settings_from_compose_validate_and_point_at_the_services(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose()["services"]
    settings = settings_from(services[service]["environment"], monkeypatch)
    database, amqp = urlparse(settings.database_url), urlparse(settings.amqp_url)
    assert database.scheme.startswith("postgresql") and database.hostname == "postgres"
    assert normalise_url(settings.database_url).startswith("postgresql+psycopg://")
    assert database.path == f"/{services['postgres']['environment']['POSTGRES_DB']}"
    assert database.username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert database.password == resolve(services["postgres"]["environment"]["POSTGRES_PASSWORD"])
    assert settings.uses_rabbitmq and amqp.hostname == "rabbitmq" and amqp.port == 5672
    assert amqp.username == services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"]
    assert amqp.password == resolve(services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"])
    assert settings.http_host == "0.0.0.0"
    assert str(settings.mappings_dir) == "/app/mappings"
    assert str(settings.schedules_dir) == "/app/schedules"


def test_the_api_publishes_the_port_it_listens_on(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    settings = settings_from(services["api"]["environment"], monkeypatch)
    container_ports = {int(str(mapping).rsplit(":", 1)[1]) for mapping in services["api"]["ports"]}
    assert container_ports == {settings.http_port}
    exposed = re.search(r"^EXPOSE (\d+)$", dockerfile(), re.MULTILINE)
    assert exposed and int(exposed.group(1)) == settings.http_port


def test_workers_can_scale() -> None:
    worker = compose()["services"]["worker"]
    assert "ports" not in worker and "container_name" not in worker
    assert worker.get("deploy", {}).get("replicas", 1) >= 1


@pytest.mark.parametrize("command", sorted({" ".join(s["command"][1:]) for s in broker_services().values()}))
def test_compose_commands_are_real_broker_commands(command: str) -> None:
    result = CliRunner().invoke(app, [*shlex.split(command), "--help"])
    assert result.exit_code == 0, result.output


def test_the_readme_commands_are_real_broker_commands() -> None:
    readme = (DOCKER / "README.md").read_text()
    assert "docker compose -f docker/compose.yaml up" in readme
    commands = re.findall(r"\brun --rm api broker ([a-z ]+?)(?:\s+#|`|$)", readme, re.MULTILINE)
    assert "keys create crm" in commands
    for command in commands:
        words = command.split()
        arguments = words[:-1] if words[:2] == ["keys", "create"] else words
        assert cli_accepts(arguments), command


def test_dockerfile_installs_the_project_and_runs_a_real_command(monkeypatch: pytest.MonkeyPatch) -> None:
    text = dockerfile()
    base = re.search(r"^FROM python:(\d+)\.(\d+)", text, re.MULTILINE)
    assert base and (int(base.group(1)), int(base.group(2))) >= (3, 11)
    assert re.search(r"^RUN pip install -r requirements/runtime\.lock$", text, re.MULTILINE)  # pinned, first
    assert re.search(r"^RUN pip install --no-deps \.$", text, re.MULTILINE)
    for copied in ("broker", "adapters", "mappings", "schedules", "pyproject.toml"):
        assert re.search(rf"^COPY .*\b{re.escape(copied)}\b", text, re.MULTILINE), copied
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd is not None
    command = yaml.safe_load(cmd.group(1))
    assert command[0] == "broker"
    assert cli_accepts(command[1:])
    env = dict(re.findall(r"(CASEBRIDGE_[A-Z_]+)=(\S+)", text))
    assert set(env) <= setting_env_names()
    settings = settings_from(env, monkeypatch)
    assert settings.http_host == "0.0.0.0"
    assert settings.http_port == 8080


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER (\S+)$", dockerfile(), re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(rf"^RUN useradd .*\b{re.escape(users[-1])}\b", dockerfile(), re.MULTILINE)


def test_the_image_carries_the_configuration_where_the_settings_look() -> None:
    text = dockerfile()
    workdir = re.search(r"^WORKDIR (\S+)$", text, re.MULTILINE)
    assert workdir is not None
    env = dict(re.findall(r"(CASEBRIDGE_[A-Z_]+)=(\S+)", text))
    for folder in ("mappings", "schedules"):
        assert re.search(rf"^COPY {folder} \./{folder}$", text, re.MULTILINE), folder
        assert env[f"{ENV_PREFIX}{folder.upper()}_DIR"] == f"{workdir.group(1)}/{folder}"


def test_sftp_server_is_openssh_based_with_a_volume() -> None:
    sftp = compose()["services"]["sftp"]
    assert sftp["image"].startswith("atmoz/sftp")
    assert sftp["volumes"]
    assert all(str(volume).split(":")[0] in compose()["volumes"] for volume in sftp["volumes"])


def test_the_known_hosts_file_the_settings_name_is_mounted_read_only() -> None:
    environment = compose()["x-casebridge-env"]
    known_hosts = environment["CASEBRIDGE_WASTE_SFTP_KNOWN_HOSTS"].split(":-", 1)[1].rstrip("}")
    for name in ("api", "worker", "scheduler"):  # the processes that run batch schedules or replay them
        mounts = [volume.split(":") for volume in compose()["services"][name].get("volumes", [])]
        assert ["./known_hosts", known_hosts, "ro"] in mounts, name
    lines = (DOCKER / "known_hosts").read_text().splitlines()
    assert lines and all(line.startswith("#") or not line.strip() for line in lines)  # keys are the operator's


SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN")


def test_no_password_has_a_default_and_only_the_api_is_published_beyond_the_host() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    for name, default in re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", text):
        assert not (SECRET_NAME.search(name) and default), f"{name} defaults to a password: {default!r}"
    services = compose()["services"]
    assert resolve(services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"]) == "operator-rabbitmq_password"
    assert resolve(services["postgres"]["environment"]["POSTGRES_PASSWORD"]) == "operator-postgres_password"
    assert resolve(services["sftp"]["command"]).split(":")[1] == "operator-sftp_password"
    for name, service in services.items():
        for mapping in service.get("ports", []):
            if name != "api":
                assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} on every interface"
    example = (DOCKER / ".env.example").read_text()
    for required in re.findall(r"\$\{([A-Z0-9_]+):\?", text):
        assert re.search(rf"^{required}=$", example, re.MULTILINE), f"{required} is not in .env.example"
    assert "docker/.env" in (REPO / ".gitignore").read_text().split()
