"""Likelihood evaluation against the real SmolLM2 GGUF: EleutherAI's lm-evaluation-harness
(`lm_eval`, latest from PyPI) with its `local-completions` model at default settings, which finds
Mantle's vLLM-style tokenizer endpoints by itself and scores prompts through `/v1/completions` with
`echo` and `logprobs`. Two tasks over data this test writes: multiple choice (acc, acc_norm) and a
rolling log-likelihood (perplexities). Every per-sample log-likelihood lm_eval reports must equal
the one computed here directly from Mantle's prompt log probabilities."""

import glob
import json
import math
import os
import subprocess
import textwrap
import time
import urllib.request

import pytest

from test_openai import push_and_deploy
from conftest import models_dir, skip_unless_ci

QUESTIONS = [
    {"question": "The capital of France is", "choices": ["Paris", "Berlin", "a banana"], "answer": 0},
    {"question": "Two plus two equals", "choices": ["seven", "four", "the moon"], "answer": 1},
    {"question": "The sun rises in the", "choices": ["west", "basement", "east"], "answer": 2},
    {"question": "Water freezes at zero degrees", "choices": ["Celsius", "Kelvin", "Fahrenheit"], "answer": 0},
]
TEXTS = [
    {"text": "The quick brown fox jumps over the lazy dog. It was a sunny day in the park."},
    {"text": "Large language models predict the next token from the tokens before it."},
]


@pytest.fixture(scope="module")
def scored_model(server):
    models_dir()
    return push_and_deploy(server, "--context", "1024", "--max-batch", "4")


def call(server, token, path, body=None):
    request = urllib.request.Request(server.endpoint + path, data=None if body is None else json.dumps(body).encode(), headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def prompt_logprobs(server, token, name, tokens):
    """The log probabilities of `tokens` (the first is null), scored without generating."""
    body = call(server, token, "/v1/completions", {"model": name, "prompt": [tokens], "max_tokens": 0, "echo": True, "logprobs": 0, "temperature": 0})
    scored = body["choices"][0]["logprobs"]["token_logprobs"]
    assert len(scored) == len(tokens) and scored[0] is None
    return scored


def write_tasks(folder, data):
    (data / "mc.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (data / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TEXTS))
    (folder / "mantle_mc.yaml").write_text(textwrap.dedent(f"""\
        task: mantle_mc
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data / "mc.jsonl"}
        test_split: test
        output_type: multiple_choice
        doc_to_text: "{{{{question}}}}"
        doc_to_choice: "{{{{choices}}}}"
        doc_to_target: answer
        metric_list:
          - metric: acc
          - metric: acc_norm
        """))
    (folder / "mantle_ppl.yaml").write_text(textwrap.dedent(f"""\
        task: mantle_ppl
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data / "texts.jsonl"}
        test_split: test
        output_type: loglikelihood_rolling
        doc_to_text: ""
        doc_to_target: "{{{{text}}}}"
        metric_list:
          - metric: word_perplexity
          - metric: byte_perplexity
          - metric: bits_per_byte
        """))


def test_lm_eval_local_completions_scores_equal_mantles_own_logprobs(server, scored_model, tmp_path):
    name, token, _ = scored_model
    python = os.environ.get("MANTLE_LM_EVAL_PYTHON")
    if not python:
        skip_unless_ci("MANTLE_LM_EVAL_PYTHON not set (scripts/test.sh installs lm-eval[api])")
    tasks, data, out = tmp_path / "tasks", tmp_path / "data", tmp_path / "out"
    for folder in (tasks, data, out):
        folder.mkdir()
    write_tasks(tasks, data)
    base_url = f"{server.endpoint}/deployments/{name}/v1/completions"
    env = dict(os.environ, OPENAI_API_KEY=token, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    args = [python, "-m", "lm_eval", "--model", "local-completions", "--model_args", f"model={name},base_url={base_url},auth_token={token},max_length=1024", "--tasks", "mantle_mc,mantle_ppl", "--include_path", str(tasks), "--output_path", str(out), "--log_samples"]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, f"lm_eval failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    assert "remote tokenizer" in run.stderr.lower(), run.stderr[-4000:]

    results = json.load(open(glob.glob(str(out / "**" / "results_*.json"), recursive=True)[0]))["results"]
    print("lm_eval results:", json.dumps(results, indent=1))
    samples = {}
    for path in glob.glob(str(out / "**" / "samples_*.jsonl"), recursive=True):
        task = "mantle_mc" if "mantle_mc" in os.path.basename(path) else "mantle_ppl"
        samples[task] = [json.loads(line) for line in open(path)]

    info = call(server, token, f"/deployments/{name}/tokenizer_info")
    assert info["eos_token"] and info["chat_template"], info
    encode = lambda text: call(server, token, f"/deployments/{name}/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]

    # Multiple choice: lm_eval splits context and continuation as tokens of the context, then the
    # rest of the tokens of both together; the score is the continuation's log-likelihood.
    correct = correct_norm = 0
    for sample in sorted(samples["mantle_mc"], key=lambda s: s["doc_id"]):
        doc = QUESTIONS[sample["doc_id"]]
        mine = []
        for choice in doc["choices"]:
            context = encode(doc["question"])
            whole = encode(doc["question"] + " " + choice)
            scored = prompt_logprobs(server, token, name, whole)
            mine.append(sum(scored[len(context):]))
        theirs = [resp[0] for resp in sample["filtered_resps"]]
        theirs = [float(r[0] if isinstance(r, list) else r) for r in theirs]
        assert all(abs(a - b) < 1e-3 for a, b in zip(mine, theirs)), (doc, mine, theirs)
        correct += max(range(3), key=lambda i: mine[i]) == doc["answer"]
        correct_norm += max(range(3), key=lambda i: mine[i] / len(" " + doc["choices"][i])) == doc["answer"]
    assert results["mantle_mc"]["acc,none"] == pytest.approx(correct / len(QUESTIONS))
    assert results["mantle_mc"]["acc_norm,none"] == pytest.approx(correct_norm / len(QUESTIONS))
    # The model knows these: better than chance.
    assert correct >= 3, correct

    # Rolling log-likelihood: one window per text, the prefix token (BOS, else EOS) then the text.
    prefix = encode(info["bos_token"] or info["eos_token"])[0]
    total_ll, words, size = 0.0, 0, 0
    for sample in sorted(samples["mantle_ppl"], key=lambda s: s["doc_id"]):
        text = TEXTS[sample["doc_id"]]["text"]
        scored = prompt_logprobs(server, token, name, [prefix] + encode(text))
        mine = sum(scored[1:])
        theirs = sample["filtered_resps"][0]
        theirs = float(theirs[0] if isinstance(theirs, list) else theirs)
        assert abs(mine - theirs) < 1e-3, (text, mine, theirs)
        total_ll += mine
        words += len(text.split())
        size += len(text.encode())
    assert results["mantle_ppl"]["word_perplexity,none"] == pytest.approx(math.exp(-total_ll / words), rel=1e-6)
    assert results["mantle_ppl"]["byte_perplexity,none"] == pytest.approx(math.exp(-total_ll / size), rel=1e-6)
    # A real model reads plain English far better than chance over its vocabulary.
    assert results["mantle_ppl"]["word_perplexity,none"] < 1000

    # Mantle's own likelihood graders (an eval run) agree with lm_eval on the same model and data.
    import openai

    api = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token)
    created = api.evals.create(
        name="likelihood",
        data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[
            {"type": "perplexity", "name": "ppl", "model": name, "input": "{{item.text}}", "unit": "word"},
            {"type": "multiple_choice", "name": "mc", "model": name, "input": "{{item.question}}", "choices": "{{item.choices}}", "answer": "{{item.answer}}"},
        ],
    )
    content = [{"item": {"text": t["text"], **q}} for t, q in zip(TEXTS * 2, QUESTIONS)]
    run = api.evals.runs.create(created.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}})
    for _ in range(600):
        run = api.evals.runs.retrieve(run.id, eval_id=created.id)
        if run.status in ("completed", "failed"):
            break
        time.sleep(0.5)
    assert run.status == "completed" and run.result_counts.errored == 0, run
    ppl, mc = run.per_testing_criteria_results
    # Each text twice: the same perplexity as over the texts once.
    assert ppl.model_extra["perplexity"] == pytest.approx(results["mantle_ppl"]["word_perplexity,none"], rel=1e-4)
    assert mc.model_extra["acc"] == pytest.approx(results["mantle_mc"]["acc,none"])
    assert mc.model_extra["acc_norm"] == pytest.approx(results["mantle_mc"]["acc_norm,none"])
    print("Mantle's graders:", ppl.model_dump(), mc.model_dump())
