"""The Responses API with the official `openai` client and the OpenAI Agents SDK (its default
model is the Responses API) against the real SmolLM2 135M served by Mantle: plain and streamed
answers, a conversation continued with `previous_response_id`, `responses.parse` with a pydantic
model, a function tool round trip, and an agent that calls a Python function tool."""

import asyncio
import json

import agents
import openai
import pydantic
import pytest

from conftest import models_dir
from test_openai import push_and_deploy

QUESTION = "What is the capital of France?"
INSTRUCTIONS = "You are a helpful assistant."

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"], "additionalProperties": False},
    "strict": True,
}


class Country(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=24)
    capital: str = pydantic.Field(max_length=24)
    population_millions: int


@pytest.fixture(scope="module")
def smol(server):
    models_dir()
    return push_and_deploy(server, "--context", "2048", "--max-batch", "8")


def client(server, token):
    return openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token)


def test_plain_streamed_and_stored(server, smol):
    name, token, _ = smol
    api = client(server, token)
    response = api.responses.create(model=name, instructions=INSTRUCTIONS, input=QUESTION, max_output_tokens=24, temperature=0)
    assert response.status in ("completed", "incomplete"), response
    assert "Paris" in response.output_text, response
    assert response.usage.input_tokens > 10 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.output[0].type == "message" and response.output[0].role == "assistant"

    # Streamed with the client's helper: typed events, and the same greedy text.
    with api.responses.stream(model=name, instructions=INSTRUCTIONS, input=QUESTION, max_output_tokens=24, temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] in ("response.completed", "response.incomplete"), kinds
    assert "response.output_text.delta" in kinds
    assert final.output_text == response.output_text

    # create(stream=True): raw events, sequence numbers in order.
    events = list(api.responses.create(model=name, input=QUESTION, instructions=INSTRUCTIONS, max_output_tokens=8, temperature=0, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == events[-1].response.output_text

    # Stored: retrieve, list input items, delete.
    again = api.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.id == response.id
    items = api.responses.input_items.list(response.id)
    assert items.data[0].role == "user" and items.data[0].content[0].text == QUESTION
    api.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(response.id)

    # Another account cannot read or continue it.
    other_token = server.new_user()[1]
    kept = api.responses.create(model=name, input="Say hello.", max_output_tokens=8, temperature=0)
    with pytest.raises(openai.NotFoundError):
        client(server, other_token).responses.retrieve(kept.id)


def test_a_conversation_continues_with_previous_response_id(server, smol):
    name, token, _ = smol
    api = client(server, token)
    first = api.responses.create(model=name, instructions=INSTRUCTIONS, input=QUESTION, max_output_tokens=16, temperature=0)
    second = api.responses.create(model=name, instructions=INSTRUCTIONS, previous_response_id=first.id, input="Repeat your last answer.", max_output_tokens=16, temperature=0)
    assert second.previous_response_id == first.id
    # The first turn (question and answer) is part of the second prompt.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.output_text
    with pytest.raises(openai.BadRequestError) as refused:
        api.responses.create(model=name, previous_response_id="resp_doesnotexist", input="x")
    assert refused.value.body["param"] == "previous_response_id"


def test_parse_with_a_pydantic_model(server, smol):
    name, token, _ = smol
    api = client(server, token)
    parsed = api.responses.parse(model=name, instructions=INSTRUCTIONS, input="Describe France as JSON.", text_format=Country, max_output_tokens=200, temperature=0)
    assert isinstance(parsed.output_parsed, Country), parsed
    assert len(parsed.output_parsed.capital) <= 24


def test_function_tool_round_trip(server, smol):
    name, token, _ = smol
    api = client(server, token)
    first = api.responses.create(model=name, instructions=INSTRUCTIONS, input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required", max_output_tokens=100, temperature=0)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) >= 1, first.output
    assert calls[0].name == "get_weather"
    arguments = json.loads(calls[0].arguments)
    assert isinstance(arguments["city"], str)

    outputs = [{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 degrees Celsius"} for call in calls]
    second = api.responses.create(model=name, instructions=INSTRUCTIONS, previous_response_id=first.id, input=outputs, tools=[WEATHER], max_output_tokens=40, temperature=0)
    assert second.status in ("completed", "incomplete")
    assert any(item.type == "message" for item in second.output), second.output

    # Streamed, the call's arguments arrive as deltas that add up to the final arguments.
    with api.responses.stream(model=name, instructions=INSTRUCTIONS, input="Weather in Oslo?", tools=[WEATHER], tool_choice="required", max_output_tokens=100, temperature=0) as stream:
        deltas = "".join(event.delta for event in stream if event.type == "response.function_call_arguments.delta")
        final = stream.get_final_response()
    streamed_calls = [item for item in final.output if item.type == "function_call"]
    assert streamed_calls and deltas.startswith(streamed_calls[0].arguments)


def test_the_agents_sdk_with_its_default_responses_model(server, smol):
    name, token, _ = smol
    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(openai.AsyncOpenAI(base_url=server.endpoint + "/v1", api_key=token), use_for_tracing=False)
    agents.set_default_openai_api("responses")
    seen = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        seen.append(city)
        return f"It is sunny in {city}."

    agent = agents.Agent(name="assistant", instructions=INSTRUCTIONS, model=name, tools=[get_weather], model_settings=agents.ModelSettings(tool_choice="required", temperature=0, max_tokens=400))
    result = asyncio.run(agents.Runner.run(agent, "What is the weather in Paris?", max_turns=4))
    assert seen, "the agent called the tool"
    assert isinstance(result.final_output, str)
    kinds = [item.type for item in result.new_items]
    assert "tool_call_item" in kinds and "tool_call_output_item" in kinds, kinds
    assert kinds[-1] == "message_output_item", kinds


def test_files_with_the_official_client(server):
    _, token = server.new_user()
    api = client(server, token)
    content = b"Mantle stores uploaded files content-addressed.\n" * 50
    created = api.files.create(file=("notes.txt", content), purpose="assistants")
    assert created.id.startswith("file-") and created.bytes == len(content) and created.filename == "notes.txt"
    assert api.files.retrieve(created.id).purpose == "assistants"
    assert created.id in [f.id for f in api.files.list()]
    assert api.files.content(created.id).read() == content
    _, other = server.new_user()
    with pytest.raises(openai.NotFoundError):
        client(server, other).files.retrieve(created.id)
    assert api.files.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve(created.id)
