"""Pipelines as code with the real SmolLM2 GGUF and the real `huggingface_hub` client: a route
bound to a repo releases each push through vetting, a perplexity suite over a dataset in the hub
(gated absolutely and against production by a paired bootstrap) and a canary under analysis.
The same weights go to production; the same model re-quantized to 3 bits is blocked at its gate;
a canary that breaks its SLO is rolled back by itself. Prints the runs, the route's history and
the audit events (the closing note shows them)."""

import hashlib
import json
import shutil
import textwrap
import threading
import time
import urllib.request
import uuid

import openai
import pytest

from conftest import SMOLLM2, models_dir, skip_unless_ci
from test_openai import push_and_deploy

TEXTS = [
    "The cat sat on the mat and looked out of the window at the rain.",
    "Paris is the capital of France, and Rome is the capital of Italy.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Computers store numbers in binary, as sequences of zeros and ones.",
    "In the morning she made coffee, read the news and went to work.",
]


def admin_json(server, path, method="GET", body=None):
    request = urllib.request.Request(server.endpoint + path, method=method, data=None if body is None else json.dumps(body).encode(), headers={"Authorization": f"Bearer {server.admin}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def pipeline_yaml(dataset, slo):
    return textwrap.dedent(f"""\
        deploy: {{context: 512, max_batch: 4}}
        suites:
          - name: wiki
            data: datasets/{dataset}@main:texts.jsonl
            graders:
              - {{type: perplexity, name: ppl, input: "{{{{item.text}}}}"}}
        gates:
          - {{suite: wiki, max: 1000, max_regression: 0.05}}
        canary:
          steps: [50, 100]
          bake_secs: 2
          min_requests: 4
          slo: {slo}
        """)


def upload(server, token, repo, files, message):
    """Uploads files (path in repo -> local path) as one commit with huggingface_hub; the commit."""
    ops = ", ".join(f"CommitOperationAdd(path_in_repo={p!r}, path_or_fileobj={str(local)!r})" for p, local in files.items())
    out = server.python(
        f"""
from huggingface_hub import HfApi, CommitOperationAdd
api = HfApi(token={token!r})
info = api.create_commit({repo!r}, operations=[{ops}], commit_message={message!r})
print(info.oid)
""",
        env={"HF_ENDPOINT": server.endpoint},
    )
    return out.strip().splitlines()[-1]


def degrade(src, dst):
    """The same model re-quantized lower: each Q4_1 block (scale d, minimum m, 32 4-bit values)
    requantized to 3 bits (8 levels over the same range: q' = round(7q/15), d' = 15d/7), kept in
    the Q4_1 container, in a copy (gguf is llama.cpp's own reader)."""
    import gguf
    import numpy as np

    shutil.copy(src, dst)
    reader = gguf.GGUFReader(str(dst), "r+")
    changed = 0
    for tensor in reader.tensors:
        if tensor.tensor_type == gguf.GGMLQuantizationType.Q4_1:
            blocks = tensor.data.view(np.uint8).reshape(-1, 20)
            scale = blocks[:, 0:2].copy().view(np.float16)
            packed = blocks[:, 4:].astype(np.int32)
            low = np.rint((packed & 0x0F) * 7 / 15).astype(np.uint8)
            high = np.rint((packed >> 4) * 7 / 15).astype(np.uint8)
            blocks[:, 4:] = low | (high << 4)
            blocks[:, 0:2] = (scale.astype(np.float32) * 15 / 7).astype(np.float16).view(np.uint8)
            changed += 1
    reader.data.flush()
    assert changed > 20, changed


def bucket(route, caller):
    """Mantle's sticky bucket of a caller on a route (domain::routes::bucket)."""
    digest = hashlib.sha256(f"{route}\0{caller}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000


def callers_on_both_sides(server, route, percent):
    """Read-only callers, at least two bucketed on a canary at `percent` and one on the stable
    deployment, so both sides get traffic whatever the random user names."""
    canary, stable = [], []
    while len(canary) < 2 or not stable:
        name, token = server.new_user(role="read")
        (canary if bucket(route, name) < percent * 100 else stable).append(token)
    return canary + stable[:1]


def wait_run(server, route, commit, traffic=None, seconds=900):
    deadline = time.time() + seconds
    while time.time() < deadline:
        runs = admin_json(server, f"/api/admin/pipelines/runs?route={route}")
        run = next((r for r in runs if r["commit"] == commit), None)
        if run and run["status"] != "running":
            return run
        time.sleep(1)
    raise AssertionError(f"the pipeline of {commit} did not end: {run}")


class Traffic:
    """Callers sending short requests to the route while a canary is analysed."""

    def __init__(self, server, route, tokens):
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.call, args=(server, route, t), daemon=True) for t in tokens]

    def call(self, server, route, token):
        api = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token, max_retries=0)
        while not self.stop.is_set():
            try:
                api.chat.completions.create(model=route, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0)
            except openai.APIError:
                pass
            time.sleep(0.2)

    def __enter__(self):
        [t.start() for t in self.threads]
        return self

    def __exit__(self, *exc):
        self.stop.set()
        [t.join(timeout=60) for t in self.threads]


def test_a_pipeline_releases_a_good_revision_blocks_a_degraded_one_and_rolls_back_a_bad_canary(server, tmp_path):
    models = models_dir()
    try:
        import gguf  # noqa: F401  (scripts/test.sh installs it)
    except ImportError:
        skip_unless_ci("the gguf package is not installed")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    name, token, repo = push_and_deploy(server, "--context", "512", "--max-batch", "4")
    user = repo.split("/")[0]
    route = "prod-" + uuid.uuid4().hex[:6]
    server.cli("routes", "set", route, "--to", name, "--reason", "first release")

    # The suite's data: a dataset repo in the hub, pinned to its commit by the pipeline.
    dataset = f"{user}/wiki-texts"
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    server.python(
        f"""
from huggingface_hub import HfApi
api = HfApi(token={token!r})
api.create_repo({dataset!r}, repo_type="dataset")
api.upload_file(path_or_fileobj={str(texts)!r}, path_in_repo="texts.jsonl", repo_id={dataset!r}, repo_type="dataset")
""",
        env={"HF_ENDPOINT": server.endpoint},
    )
    # Binding needs a site admin; the pusher's token is refused.
    assert server.cli("routes", "pipeline", route, "--repo", repo, token=token, check=False).returncode != 0
    server.cli("routes", "pipeline", route, "--repo", repo)
    assert repo in server.cli("pipelines", "list").stdout
    callers = callers_on_both_sides(server, route, percent=50)

    # 1. The same weights with a pipeline file: vetted, evaluated, gated, canaried, promoted.
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(pipeline_yaml(dataset, "{max_error_rate: 0.2}"))
    good = upload(server, token, repo, {".mantle/pipeline.yaml": spec}, "add a release pipeline")
    with Traffic(server, route, callers):
        run = wait_run(server, route, good)
    print(server.cli("pipelines", "show", run["id"]).stdout)
    assert run["status"] == "succeeded", json.dumps(run, indent=1)
    gate = run["state"]["gates"][0]
    assert gate["passed"] and gate["regression"] == pytest.approx(0, abs=1e-9) and gate["items"] == len(TEXTS), gate
    candidate = run["state"]["candidate"]
    assert admin_json(server, f"/api/admin/routes/{route}")["stable"] == candidate
    answer = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=callers[0]).chat.completions.with_raw_response.create(model=route, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert answer.headers["x-mantle-revision"] == f"{repo}@{good}"

    # 2. The same model re-quantized to 3 bits: the perplexity gate against production blocks it.
    degraded = tmp_path / SMOLLM2
    degrade(models / SMOLLM2, degraded)
    bad = upload(server, token, repo, {SMOLLM2: degraded}, "requantize to 3 bits")
    run = wait_run(server, route, bad)
    print(server.cli("pipelines", "show", run["id"]).stdout)
    assert (run["status"], run["stage"]) == ("failed", "gate"), json.dumps(run, indent=1)
    gate = run["state"]["gates"][0]
    assert not gate["passed"] and gate["regression_ci95"][0] > 0.05, gate
    assert gate["candidate"] > gate["production"] * 1.05, gate
    assert admin_json(server, f"/api/admin/routes/{route}")["stable"] == candidate

    # 3. Good weights again, but a canary SLO no CPU can hold: rolled back by the controller.
    spec.write_text(pipeline_yaml(dataset, "{min_tokens_per_sec: 100000}"))
    restored = upload(server, token, repo, {SMOLLM2: models / SMOLLM2, ".mantle/pipeline.yaml": spec}, "restore weights, stricter canary")
    with Traffic(server, route, callers):
        run = wait_run(server, route, restored)
    print(server.cli("pipelines", "show", run["id"]).stdout)
    assert (run["status"], run["stage"]) == ("failed", "canary"), json.dumps(run, indent=1)
    assert "rolled back" in run["state"]["reason"] and "tokens/s below" in run["state"]["reason"], run["state"]["reason"]
    assert admin_json(server, f"/api/admin/routes/{route}")["stable"] == candidate

    print(server.cli("pipelines", "runs", "--route", route).stdout)
    history = server.cli("routes", "history", route).stdout
    print(history)
    assert "promote" in history and "rollback" in history
    audit = admin_json(server, f"/api/admin/audit?since={started}&limit=10000")
    ours = [e for e in audit if e["target"] in (f"route:{route}",) or (e["action"].startswith("pipeline.") and route in json.dumps(e.get("details", {})))]
    for event in ours:
        print(event["seq"], event["time"], event["actor"], event["action"], event["target"])
    actions = [e["action"] for e in ours]
    for action in ("route.pipeline.set", "pipeline.run.create", "pipeline.run.stage", "route.canary", "route.promote", "pipeline.run.succeeded", "pipeline.run.failed", "route.rollback"):
        assert action in actions, (action, actions)
