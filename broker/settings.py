"""Process settings: environment variables ``CASEBRIDGE_*``, optionally a TOML file named by ``CASEBRIDGE_CONFIG``.

Secrets (database passwords, API credentials of LOB systems) belong here or in the environment, never in
``mappings/`` or ``schedules/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "CASEBRIDGE_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    database_url: str = Field(
        "sqlite:///casebridge.db",
        description="SQLAlchemy URL of the store: SQLite for one box, postgresql+psycopg:// for a deployment.",
    )
    amqp_url: str = Field(
        "memory://",
        description="kombu URL of the message broker: memory:// runs in-process, amqp://... uses RabbitMQ.",
    )
    amqp_namespace: str = Field(
        "casebridge", description="Prefix of every exchange and queue name (casebridge.inbound, ...)."
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=1, le=65535)
    public_base_url: str | None = Field(
        None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Where clients reach the API, e.g. https://casebridge.council.example: receipts' status URLs "
        "are built on it, never on the request's Host header. Unset: http://<http_host>:<http_port> (a wildcard "
        "host read as 127.0.0.1).",
    )
    api_rate_per_second: float = Field(
        100.0, ge=0, description="Requests a second allowed per API key, on average, per API process (0: no limit)."
    )
    api_rate_burst: int = Field(1000, ge=1, description="Requests an API key may make at once above that rate.")
    api_group_commit_ms: float = Field(
        2.0, ge=0, le=100, description="Events posted within this many milliseconds of each other share one "
        "transaction (each request is answered once it commits); 0: one transaction per request.",
    )
    api_fast_intake: bool = Field(
        True, description="Well-formed envelopes on POST /v1/cases… skip FastAPI's request handling (the answers "
        "are the same; anything else goes through the routes). Off only to compare the two.",
    )
    api_max_in_flight: int = Field(
        256, ge=0, description="Requests to /v1/cases handled at once at most, per API process; past it the "
        "answer is 503 with Retry-After at once, rather than a queue that grows for seconds (0: no bound).",
    )
    mappings_dir: Path = Path("mappings")
    schedules_dir: Path = Path("schedules")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest HTTP request body accepted (413 above).")
    prefetch: int = Field(50, ge=1, le=10_000, description="Unacknowledged messages a consumer may hold.")
    delivery_timeout_seconds: float = Field(30.0, gt=0)
    quick_retries: int = Field(3, ge=0, le=10, description="In-process retries of a transient delivery error.")
    outbox_poll_seconds: float = Field(1.0, gt=0)
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="`broker worker` and `broker scheduler`: serve /metrics, /health/live and "
        "/health/ready on this port (on CASEBRIDGE_HTTP_HOST); unset: not served. The API serves them on its own "
        "port.",
    )
    retention_payload_days: float = Field(
        90.0, gt=0, description="Personal data of a closed case (description, reporter, notes, attributes, "
        "attachments' URLs) is removed this many days after the case last changed while closed.",
    )
    retention_audit_days: float = Field(
        730.0, gt=0, description="Audit entries of closed cases are kept this many days (more than "
        "retention_payload_days).",
    )
    retention_failed_days: float = Field(
        30.0, gt=0, description="A failed message is kept until it is handled, then this many days.",
    )
    retention_batch_rows: int = Field(5000, ge=100, le=100_000,
                                      description="Rows one retention batch (one short transaction) takes.")
    store_size_limit_bytes: int | None = Field(
        None, gt=0, description="The store's size not to exceed: `broker status` and the console warn from 80% "
        "of it.",
    )
    hold_unknown_case_seconds: float = Field(
        300.0, gt=0, description="How long an AMQP follow-up for a case not yet known is held back, waiting for the "
        "case, before it is failed with the reason (it is taken in right behind the case if the case comes).",
    )
    log_level: str = "INFO"
    demo_receiver_port: int = Field(8025, ge=0, le=65535,
                                    description="`broker run --demo`: the webhook receiver's port (0: any free one).")
    demo_ports: dict[str, Annotated[int, Field(ge=0, le=65535)]] = Field(
        default_factory=dict, description="`broker run --demo`: sandboxes' ports by adapter name, e.g. "
        '{"confirm": 8026} (0: any free one); a sandbox not named listens on its own default port.')
    console_sign_in_failures: int = Field(
        10, ge=1, description="Refused console sign-ins allowed from one address in the window; further tries from "
        "it are answered 429 with Retry-After until the oldest failure leaves the window. Accounts are never locked.",
    )
    console_sign_in_window_seconds: float = Field(900.0, gt=0, description="The window those failures count in.")
    amqp_publishers: dict[str, list[str]] = Field(
        default_factory=dict,
        description="AMQP account -> the systems it may publish as (\"*\": any). A RabbitMQ message must carry "
        "the user_id property (RabbitMQ refuses one that is not the publishing connection's user); an account not "
        "listed may publish only as the system of its own name, and the broker's own account (in amqp_url) as any.",
    )
    console_secure_cookies: bool | None = Field(
        None, description="Mark the console's cookies Secure: true, false, or unset to follow the request "
        "(https, directly or through a proxy sending X-Forwarded-Proto).",
    )

    @model_validator(mode="after")
    def _audit_outlives_payloads(self) -> Settings:
        if self.retention_audit_days <= self.retention_payload_days:
            raise ValueError("retention_audit_days must be more than retention_payload_days: the history of a case "
                             "outlives its personal data")
        return self

    def retention_summary(self) -> str:
        """The retention policy in a sentence, for ``broker check``."""
        return (f"personal data of closed cases removed {self.retention_payload_days:g} days after closure; audit "
                f"kept {self.retention_audit_days:g} days; handled failed messages kept "
                f"{self.retention_failed_days:g} days")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def api_base_url(self) -> str:
        """``public_base_url``, or the one derived from where the API listens."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::", "") else self.http_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.http_port}"

    @property
    def amqp_user(self) -> str:
        """The broker's own AMQP account (RabbitMQ's guest when the URL names none)."""
        return unquote(urlsplit(self.amqp_url).username or "guest")

    @property
    def uses_rabbitmq(self) -> bool:
        return self.amqp_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def setting_env_names() -> set[str]:
    """Every environment variable the settings read (used to check deployment files against the code)."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {f"{ENV_PREFIX}CONFIG"}
