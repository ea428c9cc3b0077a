"""The Evals API with the official `openai` client against the real SmolLM2 GGUF: a string-check
suite over answers the model samples, and a model-graded suite whose judge (SmolLM2 again)
answers under a schema of its labels. Runs are polled as the client's users poll them."""

import time
import uuid

import openai
import pytest

from conftest import models_dir
from test_openai import push_and_deploy

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
ITEMS = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "What is the capital of Italy?", "answer": "Rome"},
    {"question": "What is the capital of Japan?", "answer": "Tokyo"},
]
SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}}, "required": ["question", "answer"]}


@pytest.fixture(scope="module")
def judged(server):
    models_dir()
    return push_and_deploy(server, "--context", "1024", "--max-batch", "4")


def wait(api, eval_id, run_id, seconds=600):
    deadline = time.time() + seconds
    while time.time() < deadline:
        run = api.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in ("completed", "failed", "canceled"):
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish: {run}")


def completions_source(name):
    return {
        "type": "completions",
        "model": name,
        "source": {"type": "file_content", "content": [{"item": item} for item in ITEMS]},
        "input_messages": {"type": "template", "template": [SYSTEM, {"role": "user", "content": "{{item.question}}"}]},
        "sampling_params": {"temperature": 0, "max_completion_tokens": 24, "seed": 7},
    }


def test_a_string_check_suite_on_answers_the_model_samples(server, judged):
    name, token, repo = judged
    api = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token)
    created = api.evals.create(
        name="capitals-" + uuid.uuid4().hex[:6],
        data_source_config={"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True},
        testing_criteria=[
            {"type": "string_check", "name": "names the capital", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "ilike"},
            {"type": "text_similarity", "name": "close to the answer", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "evaluation_metric": "rouge_1", "pass_threshold": 0.1},
        ],
    )
    assert created.id.startswith("eval_") and created.object == "eval"
    assert api.evals.retrieve(created.id).name == created.name
    assert created.id in [e.id for e in api.evals.list()]
    run = api.evals.runs.create(created.id, name="smol", data_source=completions_source(name))
    assert run.status == "queued"
    done = wait(api, created.id, run.id)
    assert done.status == "completed", done
    assert done.result_counts.total == 3 and done.result_counts.errored == 0, done.result_counts
    # The 135M model knows Paris at least.
    assert done.result_counts.passed >= 1, done
    assert done.per_model_usage[0].model_name == name and done.per_model_usage[0].invocation_count == 3
    assert done.model_extra["revision"].startswith(repo + "@")
    by_name = {r.testing_criteria: r for r in done.per_testing_criteria_results}
    assert set(by_name) == {"names the capital", "close to the answer"}
    items = list(api.evals.runs.output_items.list(run.id, eval_id=created.id))
    assert len(items) == 3
    paris = next(i for i in items if i.datasource_item["answer"] == "Paris")
    assert "Paris" in paris.sample.output[0].content
    assert paris.status == "pass" and paris.results[0].passed
    assert paris.sample.usage.completion_tokens > 0 and paris.sample.seed == 7
    print("string-check run:", done.result_counts, [r.model_dump() for r in done.per_testing_criteria_results])


def test_a_model_graded_suite_judges_under_a_schema(server, judged):
    name, token, _ = judged
    api = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token)
    created = api.evals.create(
        name="judged-" + uuid.uuid4().hex[:6],
        data_source_config={"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True},
        testing_criteria=[
            {
                "type": "label_model",
                "name": "judge",
                "model": name,
                "input": [{"role": "user", "content": "Question: {{item.question}}\nExpected: {{item.answer}}\nAnswer given: {{sample.output_text}}\nIs the answer given correct?"}],
                "labels": ["correct", "incorrect"],
                "passing_labels": ["correct"],
            }
        ],
    )
    run = api.evals.runs.create(created.id, data_source=completions_source(name))
    done = wait(api, created.id, run.id)
    assert done.status == "completed" and done.result_counts.errored == 0, done
    assert done.result_counts.total == 3
    # Sampling and judging both count: six calls on one model.
    assert done.per_model_usage[0].invocation_count == 6
    for item in api.evals.runs.output_items.list(run.id, eval_id=created.id):
        result = item.results[0]
        print(item.datasource_item["question"], repr(item.sample.output[0].content), result.sample["label"])
        assert result.name == "judge"
        assert result.sample["label"] in ("correct", "incorrect")
        assert result.passed == (result.sample["label"] == "correct")
    # A canceled run ends as canceled; deleting the eval removes it.
    again = api.evals.runs.create(created.id, data_source=completions_source(name))
    canceled = api.evals.runs.cancel(again.id, eval_id=created.id)
    assert canceled.status in ("canceled", "completed")
    assert api.evals.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        api.evals.retrieve(created.id)


def test_a_route_canaries_promotes_and_rolls_back_with_its_history(server, judged):
    """`mantle routes` moves the name clients call between deployments; the history names the
    revisions and the eval run given as evidence."""
    name, token, repo = judged
    other = "smol-b-" + uuid.uuid4().hex[:6]
    server.cli("deploy", other, f"{repo}@main", "--context", "512", "--max-batch", "1")
    route = "chat-" + uuid.uuid4().hex[:6]
    api = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token)
    created = api.evals.create(name="gate", data_source_config={"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True}, testing_criteria=[{"type": "string_check", "name": "paris", "input": "{{sample.output_text}}", "reference": "Paris", "operation": "like"}])
    run = api.evals.runs.create(created.id, data_source={**completions_source(other), "source": {"type": "file_content", "content": [{"item": ITEMS[0]}]}})
    assert wait(api, created.id, run.id).result_counts.passed == 1

    server.cli("routes", "set", route, "--to", name, "--reason", "first release")
    answer = api.chat.completions.with_raw_response.create(model=route, messages=[SYSTEM, {"role": "user", "content": "Hi"}], max_tokens=4)
    assert answer.headers["x-mantle-revision"].startswith(repo + "@")
    server.cli("routes", "canary", route, "--to", other, "--weight", "25", "--evidence", run.id)
    server.cli("routes", "promote", route)
    listed = server.cli("routes", "list").stdout
    assert route in listed and other in listed
    server.cli("routes", "rollback", route, "--reason", "checking the way back")
    history = server.cli("routes", "history", route).stdout
    print(history)
    for word in ("create", "canary", "promote", "rollback", "checking the way back", run.id):
        assert word in history, history
    assert api.chat.completions.create(model=route, messages=[SYSTEM, {"role": "user", "content": "Hi"}], max_tokens=4).choices
    server.cli("routes", "delete", route)
    server.cli("undeploy", other)


def test_runs_queued_on_two_replicas_each_run_once(server):
    """Scale-out: runs created on either replica are claimed by one worker each and completed
    once (every item graded exactly once), whichever replica's worker takes them."""
    if not server.scale_out:
        pytest.skip("two replicas share PostgreSQL and S3 in the scale-out run")
    import tempfile

    from conftest import start

    _, token = server.new_user()
    proc, replica = start(tempfile.mkdtemp(prefix="mantle-e2e-replica-"), blob_url=server.blob_url)
    try:
        apis = [openai.OpenAI(base_url=s.endpoint + "/v1", api_key=token) for s in (server, replica)]
        created = apis[0].evals.create(name="replicated", data_source_config={"type": "custom", "item_schema": {"type": "object"}}, testing_criteria=[{"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": "{{item.want}}", "operation": "eq"}])
        content = [{"item": {"want": "yes" if i % 3 else "no"}, "sample": {"output_text": "yes"}} for i in range(30)]
        runs = [apis[i % 2].evals.runs.create(created.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}}) for i in range(6)]
        for i, run in enumerate(runs):
            done = wait(apis[(i + 1) % 2], created.id, run.id)
            assert done.status == "completed", done
            assert (done.result_counts.total, done.result_counts.passed, done.result_counts.failed) == (30, 20, 10), done.result_counts
            items = list(apis[i % 2].evals.runs.output_items.list(run.id, eval_id=created.id, limit=100))
            assert sorted(item.datasource_item_id for item in items) == list(range(30))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
