"""docs/asyncapi.yaml describes the AMQP contract the code implements: names, routing keys, payload and replies."""

from __future__ import annotations

import ast
import inspect
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from support.harness import REPO

from broker.model import SCHEMA_VERSION, EventType, parse_event
from broker.model.events import EVENT_ADAPTER
from broker.model.schema import schema_filename
from broker.settings import ENV_PREFIX, Settings, setting_env_names
from broker.transport import inbound
from broker.transport.connection import topology_for
from broker.transport.inbound import REFUSAL_REASONS
from broker.transport.topology import Topology

DOCUMENT = REPO / "docs" / "asyncapi.yaml"
SCHEMA_REF = "schema/event-v1.0.schema.json"
DEFAULT_NAMESPACE = Settings.model_fields["amqp_namespace"].default


def document() -> dict[str, Any]:
    loaded = yaml.safe_load(DOCUMENT.read_text())
    assert isinstance(loaded, dict)
    return loaded


def topology() -> Topology:
    """The names a RabbitMQ deployment with the default namespace uses."""
    return topology_for(Settings(amqp_url="amqp://rabbitmq//", amqp_namespace=DEFAULT_NAMESPACE))


def model_event_types() -> set[str]:
    """Every event type the envelope union accepts, read from the model's own discriminator."""
    return set(EVENT_ADAPTER.json_schema()["discriminator"]["mapping"])


def inbound_channels() -> dict[str, dict[str, Any]]:
    exchange = topology().inbound_exchange.name
    return {name: channel for name, channel in document()["channels"].items()
            if channel.get("bindings", {}).get("amqp", {}).get("is") == "routingKey"
            and channel["bindings"]["amqp"]["exchange"]["name"] == exchange}


def reply_bodies() -> dict[bool, set[str]]:
    """Keys of the reply bodies inbound.py builds, by their ``accepted`` value: {True: {...}, False: {...}}."""
    bodies: dict[bool, set[str]] = {}
    for node in ast.walk(ast.parse(inspect.getsource(inbound))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_reply"
                and len(node.args) == 2 and isinstance(node.args[1], ast.Dict)):
            body = node.args[1]
            assert all(isinstance(key, ast.Constant) for key in body.keys), "reply bodies use literal keys"
            fields = {key.value: value for key, value in zip(body.keys, body.values, strict=True)
                      if isinstance(key, ast.Constant)}
            accepted = fields["accepted"]
            assert isinstance(accepted, ast.Constant) and isinstance(accepted.value, bool)
            bodies[accepted.value] = set(fields)
    return bodies


def test_the_default_namespace_is_the_one_the_document_names() -> None:
    setting = f"{ENV_PREFIX}AMQP_NAMESPACE"
    assert setting in setting_env_names()
    assert Topology().namespace == DEFAULT_NAMESPACE
    description = " ".join(document()["info"]["description"].split())
    assert f"The prefix `{DEFAULT_NAMESPACE}` is the default namespace (`{setting}`)" in description


def test_every_event_type_is_a_documented_routing_key_on_the_inbound_exchange() -> None:
    channels = inbound_channels()
    assert set(channels) == model_event_types()
    assert set(channels) == {event_type.value for event_type in EventType}
    exchange = topology().inbound_exchange
    for key, channel in channels.items():
        documented = channel["bindings"]["amqp"]["exchange"]
        assert documented["name"] == exchange.name, key
        assert documented["type"] == exchange.type, key
        assert documented["durable"] is bool(exchange.durable), key
        assert documented.get("autoDelete", False) is bool(exchange.auto_delete), key


def test_clients_publish_events_and_subscribe_to_replies() -> None:
    # AsyncAPI 2.x names operations from the client's side: `publish` = clients send, the application receives.
    for key, channel in inbound_channels().items():
        assert "subscribe" not in channel, key
        assert channel["publish"]["message"]["$ref"] == "#/components/messages/caseEvent", key
    replies = [channel for channel in document()["channels"].values()
               if channel.get("subscribe", {}).get("message", {}).get("$ref") == "#/components/messages/intakeReply"]
    assert len(replies) == 1
    assert "publish" not in replies[0]


def test_the_intake_queue_is_described_with_its_binding() -> None:
    queue = topology().inbound_queue
    description = " ".join(document()["info"]["description"].split())
    assert f"`{queue.name}` (bound with `{queue.routing_key}`)" in description
    assert ("quorum queue" in description) is (queue.queue_arguments.get("x-queue-type") == "quorum")


def test_the_payload_is_the_published_json_schema() -> None:
    payload_ref = document()["components"]["messages"]["caseEvent"]["payload"]["$ref"]
    assert payload_ref == SCHEMA_REF
    assert payload_ref == f"schema/{schema_filename(SCHEMA_VERSION)}"
    schema_path = (DOCUMENT.parent / payload_ref).resolve()
    assert schema_path == (REPO / "docs" / "schema" / "event-v1.0.schema.json").resolve()
    if not schema_path.exists():
        return
    schema = json.loads(schema_path.read_text())
    assert schema["discriminator"]["propertyName"] == "event_type"
    assert set(schema["discriminator"]["mapping"]) == model_event_types()
    assert {variant["$ref"] for variant in schema["oneOf"]} == set(schema["discriminator"]["mapping"].values())


def test_the_example_is_a_valid_envelope_on_a_documented_routing_key() -> None:
    message = document()["components"]["messages"]["caseEvent"]
    for example in message["examples"]:
        event = parse_event(json.dumps(example["payload"]).encode())
        assert event.event_type.value in inbound_channels()


def test_documented_refusal_reasons_are_the_ones_the_code_gives() -> None:
    reason = document()["components"]["schemas"]["refused"]["properties"]["reason"]
    assert set(reason["enum"]) == set(REFUSAL_REASONS)
    description = " ".join(reason["description"].split())
    for name, meaning in REFUSAL_REASONS.items():
        assert f"{name}: {meaning}." in description, name


def test_documented_reply_bodies_are_the_ones_the_code_sends() -> None:
    schemas = document()["components"]["schemas"]
    bodies = reply_bodies()
    assert set(bodies) == {True, False}
    for accepted, schema in ((True, schemas["accepted"]), (False, schemas["refused"])):
        assert set(schema["properties"]) == bodies[accepted]
        assert set(schema["required"]) == bodies[accepted]
        assert schema["properties"]["accepted"]["const"] is accepted


REPLY_EXAMPLES = document()["components"]["messages"]["intakeReply"]["examples"]


@pytest.mark.parametrize("example", REPLY_EXAMPLES, ids=[example["name"] for example in REPLY_EXAMPLES])
def test_reply_examples_match_the_reply_schemas(example: dict[str, Any]) -> None:
    spec = document()
    message = spec["components"]["messages"]["intakeReply"]
    payload = example["payload"]
    jsonschema.validate(payload, {**message["payload"], "components": spec["components"]})
    if not payload["accepted"]:
        assert payload["reason"] in REFUSAL_REASONS


def test_every_message_property_the_code_reads_is_documented() -> None:
    message = document()["components"]["messages"]["caseEvent"]
    properties = message["x-amqp-properties"]
    read = set(re.findall(r"properties\.get\(\"([a-z_]+)\"\)", inspect.getsource(inbound)))
    assert read == {"reply_to", "correlation_id", "user_id"}
    assert read <= set(properties)
    assert properties["reply_to"]["required"] is False
    assert properties["content_type"]["const"] == message["contentType"] == "application/json"
    assert "event_id" in properties["message_id"]["description"]
    assert message["correlationId"]["location"] == "$message.header#/correlation_id"


def test_delivery_queues_are_described_as_the_topology_names_them() -> None:
    rabbit = topology()
    queue = rabbit.delivery_queue("{target}")
    channel = document()["channels"][queue.name]
    documented = channel["bindings"]["amqp"]["queue"]
    assert documented["name"] == queue.name
    assert documented["durable"] is bool(queue.durable)
    assert channel["x-queue-arguments"] == queue.queue_arguments
    assert channel["x-queue-arguments"]["x-queue-type"] == "quorum"
    exchange = channel["x-exchange"]
    assert (exchange["name"], exchange["type"], exchange["durable"]) == (
        rabbit.delivery_exchange.name, rabbit.delivery_exchange.type, bool(rabbit.delivery_exchange.durable))
    description = " ".join(channel["description"].split())
    assert f"direct exchange `{rabbit.delivery_exchange.name}`" in description
    assert f"more than {rabbit.delivery_limit} times" in description
    assert f"`{rabbit.dead_letter_exchange.name}`" in description
    assert "publish" not in channel and "subscribe" not in channel
