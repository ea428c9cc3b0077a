"""Quotas hold across replicas: two `mantle serve` processes on one PostgreSQL (and one blob store)
share a token's requests-per-minute limit, refused with OpenAI's 429 and rate-limit headers
through the official `openai` client. Scale-out mode only (the embedded default is one process)."""

import datetime
import json
import os
import tempfile
import time
import urllib.request

import ollama
import openai
import pytest

from conftest import ADMIN_TOKEN as ADMIN, models_dir, start
from test_openai import push_and_deploy

pytestmark = pytest.mark.skipif(not os.environ.get("MANTLE_E2E_DATABASE_URL"), reason="needs the scale-out mode (two replicas on one PostgreSQL)")

QUESTION = [{"role": "user", "content": "Say hi."}]


def token_id(server, token):
    request = urllib.request.Request(server.endpoint + "/api/admin/tokens", headers={"Authorization": f"Bearer {server.admin}"})
    with urllib.request.urlopen(request) as response:
        tokens = json.load(response)
    # The listing shows no secrets: the newest token of the user that owns this one.
    return max(t["id"] for t in tokens if t["user"] == whoami(server, token))


def whoami(server, token):
    request = urllib.request.Request(server.endpoint + "/api/whoami-v2", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)["name"]


def test_a_limit_holds_across_two_replicas(server):
    models_dir()
    name, token, _ = push_and_deploy(server, "--context", "512", "--max-batch", "2")
    proc, replica = start(tempfile.mkdtemp(prefix="mantle-e2e-replica-"), blob_url=server.blob_url)
    try:
        server.cli("quotas", "set", "--token-id", str(token_id(server, token)), "--rpm", "3")
        listed = server.cli("quotas", "list").stdout
        assert "rpm=3" in listed
        # Stay inside one calendar minute.
        if datetime.datetime.now(datetime.timezone.utc).second >= 40:
            time.sleep(61 - datetime.datetime.now(datetime.timezone.utc).second)
        a = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token, max_retries=0)
        b = openai.OpenAI(base_url=replica.endpoint + "/v1", api_key=token, max_retries=0)
        for api in (a, b, a):
            api.chat.completions.create(model=name, messages=QUESTION, max_tokens=2)
        for api in (b, a):
            with pytest.raises(openai.RateLimitError) as err:
                api.chat.completions.create(model=name, messages=QUESTION, max_tokens=2)
            response = err.value.response
            assert response.headers["x-ratelimit-limit-requests"] == "3"
            assert response.headers["x-ratelimit-remaining-requests"] == "0"
            assert 1 <= int(response.headers["retry-after"]) <= 60
            assert err.value.code == "rate_limit_exceeded"
        with pytest.raises(ollama.ResponseError) as err:
            ollama.Client(host=replica.endpoint, headers={"Authorization": f"Bearer {token}"}).chat(model=name, messages=QUESTION, stream=False)
        assert err.value.status_code == 429
    finally:
        server.cli("quotas", "clear", "--token-id", str(token_id(server, token)), check=False)
        proc.terminate()
        proc.wait(timeout=10)


def admin_call(endpoint, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(endpoint + path, data=data, method=method, headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def test_two_processes_append_one_audit_chain(server):
    """Two replicas write audited changes at the same time: one unbroken chain, and checkpoints
    signed by each replica's own key verify under both keys (hardening issue #11)."""
    import threading

    proc, replica = start(tempfile.mkdtemp(prefix="mantle-e2e-replica-"), blob_url=server.blob_url)
    try:
        errors = []

        def create(endpoint, tag):
            try:
                for i in range(15):
                    admin_call(endpoint, "POST", "/api/admin/users", {"name": f"chain-{tag}-{i}"})
            except Exception as err:  # noqa: BLE001 (reported below)
                errors.append(err)

        threads = [threading.Thread(target=create, args=(endpoint, f"{n}{k}")) for n, endpoint in enumerate((server.endpoint, replica.endpoint)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for endpoint in (server.endpoint, replica.endpoint):
            assert admin_call(endpoint, "POST", "/api/admin/audit/checkpoint", {})["seq"] > 0
        for endpoint in (server.endpoint, replica.endpoint):
            report = admin_call(endpoint, "GET", "/api/admin/audit/verify")
            assert report["ok"], report
            assert report["verified_through"] is not None, report
        keys = [admin_call(endpoint, "GET", "/api/audit/public-key")["public_key"] for endpoint in (server.endpoint, replica.endpoint)]
        out = server.cli("audit", "verify", "--pubkey", keys[0], "--pubkey", keys[1]).stdout
        assert "audit log intact" in out and "0 by other keys" in out, out
    finally:
        proc.terminate()
        proc.wait(timeout=10)
