"""Process settings: environment variables ``CASEBRIDGE_*``, optionally a TOML file named by ``CASEBRIDGE_CONFIG``.

Secrets (database passwords, API credentials of LOB systems) belong here or in the environment, never in
``mappings/`` or ``schedules/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
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
    mappings_dir: Path = Path("mappings")
    schedules_dir: Path = Path("schedules")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest HTTP request body accepted (413 above).")
    prefetch: int = Field(50, ge=1, le=10_000, description="Unacknowledged messages a consumer may hold.")
    delivery_timeout_seconds: float = Field(30.0, gt=0)
    quick_retries: int = Field(3, ge=0, le=10, description="In-process retries of a transient delivery error.")
    outbox_poll_seconds: float = Field(1.0, gt=0)
    hold_unknown_case_seconds: float = Field(
        300.0, gt=0, description="How long an AMQP follow-up for a case not yet known is held back, waiting for the "
        "case, before it is failed with the reason (it is taken in right behind the case if the case comes).",
    )
    log_level: str = "INFO"
    demo_receiver_port: int = Field(8025, ge=0, le=65535,
                                    description="`broker run --demo`: the webhook receiver's port (0: any free one).")
    demo_confirm_port: int = Field(8026, ge=0, le=65535,
                                   description="`broker run --demo`: the Confirm simulator's port (0: any free one).")
    demo_uniform_port: int = Field(8027, ge=0, le=65535,
                                   description="`broker run --demo`: the Uniform simulator's port (0: any free one).")
    console_secure_cookies: bool | None = Field(
        None, description="Mark the console's cookies Secure: true, false, or unset to follow the request "
        "(https, directly or through a proxy sending X-Forwarded-Proto).",
    )

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
    def uses_rabbitmq(self) -> bool:
        return self.amqp_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def setting_env_names() -> set[str]:
    """Every environment variable the settings read (used to check deployment files against the code)."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {f"{ENV_PREFIX}CONFIG"}
