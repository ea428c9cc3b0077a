"""The OpenAI API with the official `openai` client against the real SmolLM2 GGUF, pushed through
huggingface_hub like a user would, vetted, deployed and served by llama.cpp inside Mantle."""

import concurrent.futures
import os
import time
import urllib.request
import uuid

import openai
import pytest

import conftest
from conftest import SMOLLM2, models_dir, push_smollm2
from test_vetting import wait_for_verdict

# The 135M model answers this well with a short system prompt (with the template's long default
# one, greedy decoding wanders off into French).
QUESTION = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}]


def push_and_deploy(server, *deploy_args):
    """Pushes SmolLM2, waits for a safe verdict, deploys it; returns (name, token, repo)."""
    _, token, repo = push_smollm2(server)
    verdict = wait_for_verdict(server, repo, token)
    assert verdict["status"] == "safe" and not verdict["blocked"], verdict
    name = "smol-" + uuid.uuid4().hex[:6]
    server.cli("deploy", name, f"{repo}@main", *deploy_args)
    return name, token, repo


@pytest.fixture(scope="module")
def smol(server):
    models_dir()
    return push_and_deploy(server, "--context", "1024", "--max-batch", "16")


def client(server, token, **kw):
    return openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token, **kw)


def test_models_and_plain_chat(server, smol):
    name, token, repo = smol
    api = client(server, token)
    assert name in [m.id for m in api.models.list().data]
    raw = api.chat.completions.with_raw_response.create(model=name, messages=QUESTION, max_tokens=24, temperature=0)
    answer = raw.parse()
    assert "Paris" in answer.choices[0].message.content, answer
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.system_fingerprint.startswith("fp_")
    commit = server.cli("ls", repo, token=token).stdout  # the repo exists and lists for its owner
    assert SMOLLM2 in commit
    revision = raw.headers["x-mantle-revision"]
    assert revision.startswith(repo + "@") and len(revision.split("@")[1]) == 40
    usage = answer.usage
    assert usage.prompt_tokens > 10 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    # Log probabilities, as the client parses them.
    probed = api.chat.completions.create(model=name, messages=QUESTION, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
    content = probed.choices[0].logprobs.content
    assert len(content) == probed.usage.completion_tokens
    assert "".join(t.token for t in content) == probed.choices[0].message.content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token for t in content)


def test_streamed_chat_equals_plain_and_reports_usage(server, smol):
    name, token, _ = smol
    api = client(server, token)
    plain = api.chat.completions.create(model=name, messages=QUESTION, max_tokens=24, temperature=0)
    stream = api.chat.completions.create(model=name, messages=QUESTION, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_completions(server, smol):
    name, token, _ = smol
    api = client(server, token)
    done = api.completions.create(model=name, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert done.object == "text_completion"
    assert done.choices[0].text.strip(), done
    streamed = "".join(c.choices[0].text for c in api.completions.create(model=name, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == done.choices[0].text


def test_seed_gives_the_same_answer(server, smol):
    name, token, _ = smol
    api = client(server, token)
    ask = lambda: api.chat.completions.create(model=name, messages=[{"role": "user", "content": "Write a short poem about rivers."}], max_tokens=40, temperature=0.9, seed=1234).choices[0].message.content
    assert ask() == ask()


def test_sixteen_concurrent_streams_all_complete(server, smol):
    name, token, _ = smol
    api = client(server, token)

    def one(i):
        stream = api.chat.completions.create(model=name, messages=[{"role": "user", "content": f"Count from {i} to {i + 5}."}], max_tokens=32, temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, [c.choices[0].finish_reason for c in chunks if c.choices][-1], chunks[-1].usage

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    for text, finish, usage in results:
        assert text and finish in ("stop", "length"), (text, finish)
        assert usage.completion_tokens >= 1
    with urllib.request.urlopen(server.endpoint + "/metrics") as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
        metrics = reply.read().decode()
    assert f'mantle_requests_total{{deployment="{name}",outcome="ok"}}' in metrics
    # The exposition is valid OpenMetrics, as Prometheus' own parser reads it.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    families = {family.name: family for family in text_string_to_metric_families(metrics)}
    assert families["mantle_requests"].type == "counter"
    assert families["mantle_time_to_first_token_seconds"].type == "histogram"
    assert any(s.labels.get("deployment") == name for s in families["mantle_queue_depth"].samples)


def test_bad_requests_get_openai_errors_without_disturbing_a_stream(server, smol):
    name, token, _ = smol
    api = client(server, token, max_retries=0)
    stream = api.chat.completions.create(model=name, messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=64, temperature=0, stream=True)
    first = next(iter(stream))
    with pytest.raises(openai.AuthenticationError):
        client(server, "not-a-token", max_retries=0).chat.completions.create(model=name, messages=QUESTION)
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="no-such-model", messages=QUESTION)
    for bad in [dict(temperature=5), dict(n=0), dict(max_tokens=0), dict(top_p=2), dict(logprobs=True, top_logprobs=25), dict(messages=[]), dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(a)\\1"}}})]:
        args = {"model": name, "messages": QUESTION, **bad}
        with pytest.raises(openai.BadRequestError) as caught:
            api.chat.completions.create(**args)
        assert caught.value.body and caught.value.body.get("message"), caught.value
    rest = [c for c in stream]
    assert first.choices[0].delta.role == "assistant"
    assert rest[-1].choices[0].finish_reason in ("stop", "length")


def test_full_queue_gives_429_and_a_closed_stream_frees_its_place(tmp_path):
    models_dir()
    if os.environ.get("MANTLE_E2E_DATABASE_URL"):
        # A second server on the shared database would race the first for scan jobs on blobs
        # it cannot see (each e2e server gets its own blob prefix); admission is storage-blind.
        pytest.skip("runs on the embedded default only")
    proc, server = conftest.start(str(tmp_path), {"MANTLE__RUNTIME__MAX_QUEUE": "1"})
    try:
        name, token, _ = push_and_deploy(server, "--context", "1024", "--max-batch", "1")
        api = client(server, token, max_retries=0)
        long = dict(model=name, messages=[{"role": "user", "content": "Write a very long essay about the sea."}], max_tokens=600, temperature=0.7, stream=True)
        first = api.chat.completions.create(**long)
        next(iter(first))  # running
        second = api.chat.completions.create(**long)  # queued behind it
        with pytest.raises(openai.RateLimitError) as caught:
            api.chat.completions.create(model=name, messages=QUESTION, max_tokens=4)
        assert caught.value.response.headers.get("retry-after") == "1"
        first.close()
        second.close()
        # The server notices the closed connections at its next write and frees both places.
        deadline = time.time() + 30
        while True:
            try:
                answer = api.chat.completions.create(model=name, messages=QUESTION, max_tokens=4)
                break
            except openai.RateLimitError:
                assert time.time() < deadline, "closed streams did not free their places"
                time.sleep(0.2)
        assert answer.choices[0].message.content is not None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
