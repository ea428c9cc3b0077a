"""Structured output and tool calls with the official `openai` and `ollama` clients against the
real SmolLM2 135M: grammar-constrained decoding keeps even this small model's output valid JSON
that validates against the schema (checked here with the `jsonschema` package)."""

import datetime
import json
import uuid
from typing import Literal

import jsonschema
import ollama
import openai
import pydantic
import pytest

from conftest import models_dir
from test_openai import push_and_deploy

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=24)
    country: str = pydantic.Field(max_length=24)
    population: int
    coastal: bool
    languages: list[Literal["French", "English", "German", "Spanish", "Italian", "Other"]] = pydantic.Field(max_length=3)


class Booking(pydantic.BaseModel):
    """Formats, a pattern and numeric bounds: what pydantic users write every day."""

    title: str = pydantic.Field(max_length=40)
    code: str = pydantic.Field(pattern=r"^[A-Z]{3}-\d{2}$")
    starts: datetime.datetime
    day: datetime.date
    id: uuid.UUID
    seats: int = pydantic.Field(ge=1, le=8)
    rating: float = pydantic.Field(ge=0, le=5)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30, "description": "The city"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The current time in a time zone", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def smol(server):
    models_dir()
    return push_and_deploy(server, "--context", "2048", "--max-batch", "4")


def client(server, token):
    return openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token, max_retries=0)


def test_json_schema_output_validates_with_the_135m_model(server, smol):
    name, token, _ = smol
    api = client(server, token)
    ask = [SYSTEM, {"role": "user", "content": "Describe Paris as JSON."}]
    # The client's own pydantic path: a strict schema from the model class, parsed back into it.
    parsed = api.chat.completions.parse(model=name, messages=ask, response_format=City, temperature=0, max_tokens=300)
    choice = parsed.choices[0]
    assert choice.finish_reason == "stop", choice
    city = choice.message.parsed
    assert isinstance(city, City) and city.name, choice.message.content
    # Sampled, several seeds: every answer validates.
    schema = City.model_json_schema()
    for seed in range(3):
        answer = api.chat.completions.create(model=name, messages=ask, temperature=1.0, seed=seed, max_tokens=300, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})
        assert answer.choices[0].finish_reason == "stop", answer
        jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
    # Streamed, greedy: the same text as the plain answer.
    stream = api.chat.completions.create(model=name, messages=ask, temperature=0, max_tokens=300, stream=True, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": City.model_json_schema(), "strict": True}})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), schema)
    # date-time, date, uuid, a pattern and numeric bounds, validated by pydantic itself.
    booking = api.chat.completions.parse(model=name, messages=[SYSTEM, {"role": "user", "content": "Book a table for dinner tomorrow, as JSON."}], response_format=Booking, temperature=0.7, seed=3, max_tokens=300)
    assert booking.choices[0].finish_reason == "stop", booking
    assert isinstance(booking.choices[0].message.parsed, Booking), booking.choices[0].message.content
    # JSON mode: an object.
    answer = api.chat.completions.create(model=name, messages=[SYSTEM, {"role": "user", "content": "Give me a JSON object with a name and an age."}], temperature=0, max_tokens=200, response_format={"type": "json_object"})
    assert answer.choices[0].finish_reason == "stop", answer
    assert isinstance(json.loads(answer.choices[0].message.content), dict)
    # A schema feature that cannot be enforced is refused, naming it.
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(model=name, messages=ask, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"address": {"type": "string", "format": "idn-hostname"}}}}})
    assert "format" in err.value.body["message"] and err.value.body["param"] == "response_format.json_schema.schema"


def test_forced_tool_calls_validate_and_stream(server, smol):
    name, token, _ = smol
    api = client(server, token)
    ask = [SYSTEM, {"role": "user", "content": "What is the weather like in Paris?"}]
    answer = api.chat.completions.create(model=name, messages=ask, tools=[WEATHER, TIME], tool_choice="required", temperature=0, max_tokens=200)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None and choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        spec = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), spec["function"]["parameters"])

    named = api.chat.completions.create(model=name, messages=ask, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=0, max_tokens=200)
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and len(named.choices[0].message.tool_calls) == 1
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])

    # Streamed: index, id and name first, then argument fragments that add up to the same call.
    stream = api.chat.completions.create(model=name, messages=ask, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=0, max_tokens=200, stream=True)
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for piece in delta.tool_calls or []:
            entry = calls.setdefault(piece.index, {"id": None, "name": None, "arguments": "", "pieces": 0})
            if piece.id:
                assert entry["id"] is None
                entry["id"], entry["name"] = piece.id, piece.function.name
            entry["arguments"] += piece.function.arguments or ""
            entry["pieces"] += 1
        finish = chunk.choices[0].finish_reason or finish
    assert list(calls) == [0] and calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert calls[0]["pieces"] > 2, "arguments stream in fragments"
    assert json.loads(calls[0]["arguments"]) == arguments
    assert finish == "stop"

    # The call and its result go back in; the model answers in text.
    follow = ask + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "unit": "celsius", "sky": "sunny"})},
    ]
    reply = api.chat.completions.create(model=name, messages=follow, tools=[WEATHER, TIME], tool_choice="none", temperature=0, max_tokens=40)
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls
    # Auto: the model decides; whatever it does comes back well formed.
    auto = api.chat.completions.create(model=name, messages=ask, tools=[WEATHER], temperature=0, max_tokens=120)
    for call in auto.choices[0].message.tool_calls or []:
        assert call.function.name == "get_weather"
        json.loads(call.function.arguments)


def test_ollama_format_and_tools(server, smol):
    name, token, _ = smol
    api = ollama.Client(host=server.endpoint, headers={"Authorization": f"Bearer {token}"})
    ask = [SYSTEM, {"role": "user", "content": "Describe Rome as JSON."}]
    answer = api.chat(model=name, messages=ask, format=City.model_json_schema(), options={"temperature": 0, "num_predict": 300})
    assert answer.done_reason == "stop", answer
    City.model_validate_json(answer.message.content)
    generated = api.generate(model=name, prompt="List three colours as JSON.", format="json", options={"temperature": 0, "num_predict": 200})
    assert generated.done_reason == "stop" and isinstance(json.loads(generated.response), dict), generated
    # Tools from the history come back through the template: a call with object arguments and its result.
    history = [
        SYSTEM,
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
        {"role": "tool", "content": "21 degrees and sunny", "tool_name": "get_weather"},
    ]
    reply = api.chat(model=name, messages=history, tools=[WEATHER], options={"temperature": 0, "num_predict": 60})
    assert reply.done
    for call in reply.message.tool_calls or []:
        assert isinstance(call.function.arguments, dict)
    with pytest.raises(ollama.ResponseError) as err:
        api.chat(model=name, messages=ask, format={"type": "string", "pattern": "(?<=a)b"})
    assert err.value.status_code == 400 and "look-around" in err.value.error
