"""Usage accounting end to end: requests through the official `openai` and `ollama` clients leave
usage records whose totals equal the usage the clients were told, priced at the deployment's
prices, reported by `GET /api/usage` and `mantle usage`."""

import json
import time
import urllib.request

import ollama
import openai

from conftest import models_dir
from test_openai import push_and_deploy

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def report(server, token, query):
    request = urllib.request.Request(f"{server.endpoint}/api/usage?{query}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def test_usage_matches_what_clients_saw(server):
    models_dir()
    name, token, _ = push_and_deploy(server, "--context", "1024", "--max-batch", "4", "--price-prompt", "0.2", "--price-completion", "0.8")
    api = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token)
    prompt = completion = 0
    answer = api.chat.completions.create(model=name, messages=[SYSTEM, {"role": "user", "content": "Name a color."}], max_tokens=8, temperature=0)
    prompt, completion = prompt + answer.usage.prompt_tokens, completion + answer.usage.completion_tokens
    stream = api.chat.completions.create(model=name, messages=[SYSTEM, {"role": "user", "content": "Name a fruit."}], max_tokens=8, stream=True, stream_options={"include_usage": True})
    usage = [c.usage for c in stream if c.usage][-1]
    prompt, completion = prompt + usage.prompt_tokens, completion + usage.completion_tokens
    chat = ollama.Client(host=server.endpoint, headers={"Authorization": f"Bearer {token}"}).chat(model=name, messages=[{"role": "user", "content": "Name a tree."}], stream=False, options={"num_predict": 8})
    prompt, completion = prompt + chat.prompt_eval_count, completion + chat.eval_count

    deadline = time.time() + 10
    while True:
        mine = report(server, token, "by=deployment")
        if mine["total"]["requests"] >= 3 or time.time() > deadline:
            break
        time.sleep(0.1)
    row = next(r for r in mine["rows"] if r["key"] == name)
    assert (row["requests"], row["errors"]) == (3, 0)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
    assert abs(row["cost"] - (prompt * 0.2 + completion * 0.8) / 1e6) < 1e-12

    # The admin sees the same through the CLI, grouped by account.
    out = json.loads(server.cli("usage", "--by", "account", "--json").stdout)
    assert any(r["requests"] >= 3 for r in out["rows"])
    table = server.cli("usage", "--by", "deployment").stdout
    assert name in table and "total" in table
