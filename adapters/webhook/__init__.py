"""JSON webhook adapter: delivers canonical events to any HTTP endpoint."""

from adapters.webhook.adapter import WebhookAdapter
from adapters.webhook.config import WebhookConfig, WebhookMapping

__all__ = ["WebhookAdapter", "WebhookConfig", "WebhookMapping"]
