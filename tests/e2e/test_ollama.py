"""The Ollama API with the official `ollama` Python client against the real SmolLM2 GGUF and
all-MiniLM-L6-v2, on the same port as the Hub and the OpenAI API, with Mantle tokens as keys."""

import datetime
import json
import urllib.request

import numpy as np
import ollama
from huggingface_hub import HfApi
import pytest

from conftest import models_dir
from test_embeddings import minilm  # noqa: F401  (a fixture)
from test_openai import push_and_deploy

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
QUESTION = {"role": "user", "content": "What is the capital of France?"}


@pytest.fixture(scope="module")
def smol(server):
    models_dir()
    return push_and_deploy(server, "--context", "1024", "--max-batch", "4")


def client(server, token):
    return ollama.Client(host=server.endpoint, headers={"Authorization": f"Bearer {token}"})


def test_chat_plain_and_streamed(server, smol):
    name, token, repo = smol
    api = client(server, token)
    answer = api.chat(model=name, messages=[SYSTEM, QUESTION], stream=False, options={"temperature": 0, "num_predict": 24})
    assert "Paris" in answer.message.content, answer
    assert answer.message.role == "assistant"
    assert answer.done and answer.done_reason in ("stop", "length")
    assert answer.prompt_eval_count > 10 and 0 < answer.eval_count <= 24
    assert answer.total_duration >= answer.eval_duration > 0
    datetime.datetime.fromisoformat(answer.created_at.replace("Z", "+00:00"))

    # ":latest" names the same model; the stream's pieces add up to the plain answer.
    parts = list(api.chat(model=name + ":latest", messages=[SYSTEM, QUESTION], stream=True, options={"temperature": 0, "num_predict": 24}))
    assert len(parts) > 2 and all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == answer.message.content
    assert parts[-1].eval_count == answer.eval_count

    # A length cap and a stop string.
    capped = api.chat(model=name, messages=[SYSTEM, QUESTION], stream=False, options={"temperature": 0, "num_predict": 3})
    assert capped.done_reason == "length" and capped.eval_count == 3
    stopped = api.chat(model=name, messages=[SYSTEM, QUESTION], stream=False, options={"temperature": 0, "stop": ["Paris"]})
    assert "Paris" not in stopped.message.content and stopped.done_reason == "stop"

    # The same seed, the same text.
    poem = [{"role": "user", "content": "Write a short poem about rivers."}]
    ask = lambda: api.chat(model=name, messages=poem, stream=False, options={"temperature": 0.9, "seed": 42, "num_predict": 32}).message.content
    assert ask() == ask()


def test_generate(server, smol):
    name, token, _ = smol
    api = client(server, token)
    answer = api.generate(model=name, prompt="What is the capital of France?", system="You are a helpful assistant.", stream=False, options={"temperature": 0, "num_predict": 24})
    assert "Paris" in answer.response and answer.done
    raw = api.generate(model=name, prompt="The capital of France is", raw=True, stream=False, options={"temperature": 0, "num_predict": 4})
    assert "Paris" in raw.response, raw
    parts = list(api.generate(model=name, prompt="Count to five.", stream=True, options={"num_predict": 8}))
    assert parts[-1].done and 1 <= parts[-1].eval_count <= 8 and all(not p.done for p in parts[:-1])
    assert "".join(p.response for p in parts).strip()
    # An empty prompt loads the model and says so.
    loaded = api.generate(model=name, prompt="", stream=False)
    assert loaded.done and loaded.done_reason == "load"


def test_listing_show_ps_version(server, smol):
    name, token, repo = smol
    api = client(server, token)
    api.chat(model=name, messages=[QUESTION], stream=False, options={"num_predict": 1})
    listed = {m.model: m for m in api.list().models}
    assert name in listed and listed[name].details.format == "gguf" and listed[name].size > 1_000_000
    assert len(listed[name].digest) == 64
    shown = api.show(name)
    assert "im_start" in shown.template and shown.capabilities == ["completion"]
    assert shown.modelinfo["mantle.revision"].startswith(repo + "@")
    running = {m.model: m for m in api.ps().models}
    assert name in running and running[name].context_length == 1024
    with urllib.request.urlopen(server.endpoint + "/api/version") as response:
        assert json.load(response)["version"]

    # Another user sees none of this user's deployments once the repo is private.
    _, other = server.new_user()
    assert name in [m.model for m in client(server, other).list().models]
    HfApi(endpoint=server.endpoint, token=token).update_repo_settings(repo, private=True)
    assert name not in [m.model for m in client(server, other).list().models]
    with pytest.raises(ollama.ResponseError) as err:
        client(server, other).chat(model=name, messages=[QUESTION], stream=False)
    assert err.value.status_code == 404 and "not found" in err.value.error

    # keep_alive: pinned for a while, then unloaded by an empty request with keep_alive=0. An
    # ordinary token may not unload a model others use; an admin token may.
    api.generate(model=name, prompt="", keep_alive="10m")
    assert {m.model: m for m in api.ps().models}[name].expires_at.year < 9999
    with pytest.raises(ollama.ResponseError) as err:
        api.generate(model=name, prompt="", keep_alive=0)
    assert err.value.status_code == 403
    admin = client(server, server.admin)
    assert admin.generate(model=name, prompt="", keep_alive=0).done_reason == "unload"
    assert name not in [m.model for m in api.ps().models]
    assert name in [m.model for m in api.list().models]


def test_errors_are_ollama_shaped(server, smol):
    name, token, _ = smol
    api = client(server, token)
    cases = [
        dict(model="no-such-model", messages=[QUESTION]),
        dict(model=name, messages=[QUESTION], format={"type": "string", "format": "idn-hostname"}),
        dict(model=name, messages=[QUESTION], tools=[{"type": "function", "function": {"name": "bad name!", "description": "d", "parameters": {"type": "object", "properties": {}}}}]),
        dict(model=name, messages=[QUESTION], options={"temperature": 7}),
        dict(model=name, messages=[QUESTION], options={"mirostat": 2}),
        dict(model=name, messages=[{"role": "wizard", "content": "hi"}]),
        dict(model=name, messages=[QUESTION], think=True),
    ]
    for case in cases:
        with pytest.raises(ollama.ResponseError) as err:
            api.chat(stream=False, **case)
        assert err.value.status_code in (400, 404), (case, err.value)
        assert err.value.error and not err.value.error.startswith("{"), err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=server.endpoint).chat(model=name, messages=[QUESTION], stream=False)
    assert err.value.status_code == 401


def test_embed(server, minilm):  # noqa: F811
    name, token = minilm
    api = client(server, token)
    texts = ["a cat sat on the mat", "a kitten rested on the rug", "quarterly revenue grew"]
    result = api.embed(model=name, input=texts)
    vectors = np.array(result.embeddings)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert result.prompt_eval_count > 10
    single = api.embed(model=name, input="a cat sat on the mat")
    assert np.allclose(single.embeddings[0], vectors[0], atol=1e-5)
    legacy = api.embeddings(model=name, prompt="a cat sat on the mat")
    assert np.allclose(legacy.embedding, vectors[0], atol=1e-5)
    # Too long: cut by default (Ollama's truncate), refused with truncate=False.
    long = "word " * 600
    assert len(api.embed(model=name, input=long).embeddings[0]) == 384
    with pytest.raises(ollama.ResponseError) as err:
        api.embed(model=name, input=long, truncate=False)
    assert err.value.status_code == 400
    with pytest.raises(ollama.ResponseError):
        api.chat(model=name, messages=[QUESTION], stream=False)
