"""Webhooks with the official `openai` client: endpoints made through `client.webhooks.create`
on a server that allows loopback deliveries, events verified with `client.webhooks.unwrap`
(OpenAI's own Standard Webhooks verifier), and requests to hosts not allowed refused."""

import http.server
import json
import threading
import time

import openai
import pytest



@pytest.fixture(scope="module")
def hooked(server):
    """The suite's server: it allows deliveries to loopback (see conftest.start)."""
    return server


def receiver():
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((dict(self.headers), body.decode()))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/hook", received, httpd


def test_eval_run_events_verify_with_the_openai_client(hooked):
    _, token = hooked.new_user()
    url, received, httpd = receiver()
    api = openai.OpenAI(base_url=hooked.endpoint + "/v1", api_key=token)
    with pytest.raises(openai.BadRequestError):
        api.webhooks.create(name="metadata", url="http://169.254.169.254/latest/meta-data", event_types=["eval.run.succeeded"])
    endpoint = api.webhooks.create(name="ci", url=url, event_types=["eval.run.succeeded", "eval.run.canceled"])
    assert endpoint.signing_secret.startswith("whsec_") and endpoint.id in [e.id for e in api.webhooks.list()]
    time.sleep(2)  # the dispatcher takes its place at the log's head
    created = api.evals.create(name="hooked", data_source_config={"type": "custom", "item_schema": {"type": "object"}}, testing_criteria=[{"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": "a", "operation": "eq"}])
    run = api.evals.runs.create(created.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": [{"item": {}, "sample": {"output_text": "a"}}]}})
    for _ in range(60):
        if received:
            break
        time.sleep(0.5)
    assert received, "no delivery"
    headers, body = received[0]
    event = api.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)
    assert event.type == "eval.run.succeeded" and event.data.id == run.id
    with pytest.raises(openai.InvalidWebhookSignatureError):
        api.webhooks.unwrap(body.replace(run.id, "evalrun_forged"), headers, secret=endpoint.signing_secret)
    # Rotating with the old secret kept: a test event verifies under either.
    rotated = api.webhooks.rotate_secret(endpoint.id, keep_old_secret_active_for_24_hours=True)
    result = api.webhooks.test(endpoint.id, event_type="eval.run.succeeded")
    assert result.status_code == 204
    headers, body = received[-1]
    api.webhooks.unwrap(body, headers, secret=rotated.signing_secret)
    api.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)
    assert api.webhooks.delete(endpoint.id).deleted
    httpd.shutdown()
