"""Retrieval with the official `openai` client against the real all-MiniLM-L6-v2 encoder and
SmolLM2: files uploaded, vector stores filled with `upload_and_poll` and file batches, searched
(hybrid, with filters), `file_search` in the Responses API with citations that name only retrieved
files, hostile documents as per-file errors, tenants kept apart, a store re-indexed in the
background when its embedding deployment moves to a new revision, and (scale-out) two replicas
that answer a search the same way after an ingest on either."""

import json
import tempfile
import time
import urllib.request
import uuid

import openai
import pytest

from conftest import ADMIN_TOKEN, models_dir, start
from test_embeddings import minilm  # noqa: F401 (a fixture)
from test_vetting import wait_for_verdict
from test_openai import push_and_deploy

DOCS = {
    "cats.txt": "Cats are small domesticated carnivorous mammals. A cat purrs when it is content and hunts mice at night.",
    "markets.md": "# Markets\nThe stock market fell sharply on Monday as bond yields rose and investors sold technology shares.",
    "volcano.html": "<html><head><style>p{color:red}</style><script>var x = 'cats';</script></head><body><h1>Volcanoes</h1><p>A volcano erupts when magma rises through the crust and escapes as lava.</p></body></html>",
}


@pytest.fixture(scope="module")
def smol(server):
    models_dir()
    return push_and_deploy(server, "--context", "2048", "--max-batch", "8")


def tiny_pdf(text):
    """A one-page PDF with `text` in Helvetica, written by hand (no PDF library needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def deployment(server, name):
    request = urllib.request.Request(f"{server.endpoint}/api/admin/deployments", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return next(d for d in json.load(reply) if d["name"] == name)


def client(server, token):
    return openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token)


def filled_store(api, embedder, **extra):
    store = api.vector_stores.create(name="kb-" + uuid.uuid4().hex[:6], extra_body={"embedding_model": embedder}, **extra)
    assert store.status in ("completed", "in_progress")
    for name, text in DOCS.items():
        done = api.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=(name, text.encode()), poll_interval_ms=200)
        assert done.status == "completed", done
    return store


def test_stores_fill_and_search(server, minilm):  # noqa: F811
    embedder, token = minilm
    api = client(server, token)
    store = filled_store(api, embedder)
    retrieved = api.vector_stores.retrieve(store.id)
    assert retrieved.file_counts.completed == 3 and retrieved.status == "completed"

    for query, expected in [("Why does a cat purr?", "cats.txt"), ("stock prices and bond yields", "markets.md"), ("magma and lava", "volcano.html")]:
        page = api.vector_stores.search(store.id, query=query)
        assert page.data[0].filename == expected, (query, [(d.filename, d.score) for d in page.data])
        assert all(0.0 <= d.score <= 1.0 for d in page.data)
    # The HTML's script is not text.
    volcano = api.vector_stores.search(store.id, query="volcano").data[0]
    assert "var x" not in volcano.content[0].text and "Volcanoes" in volcano.content[0].text

    # A batch with attributes, then a filter that keeps only it.
    batch = api.vector_stores.file_batches.upload_and_poll(store.id, files=[("notes.txt", b"Cats sleep for most of the day.")], poll_interval_ms=200)
    assert batch.status == "completed" and batch.file_counts.completed == 1, batch
    notes = list(api.vector_stores.files.list(store.id))
    notes_id = next(f.id for f in api.files.list() if f.filename == "notes.txt")
    api.vector_stores.files.update(file_id=notes_id, vector_store_id=store.id, attributes={"topic": "sleep", "year": 2025})
    page = api.vector_stores.search(store.id, query="cats", filters={"type": "eq", "key": "topic", "value": "sleep"}, max_num_results=1)
    assert [d.file_id for d in page.data] == [notes_id]
    assert len(notes) == 4

    # A real PDF is read (in a child process); a broken one and a hostile one end as per-file
    # errors, and the store keeps working.
    paper = api.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("paper.pdf", tiny_pdf("Penguins huddle together to survive the Antarctic winter.")), poll_interval_ms=200)
    assert paper.status == "completed", paper
    assert api.vector_stores.search(store.id, query="penguins huddle in winter").data[0].filename == "paper.pdf"
    broken = api.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("broken.pdf", b"%PDF-1.7\n%\xe2\xe3 not really"), poll_interval_ms=200)
    assert broken.status == "failed" and broken.last_error.code == "invalid_file", broken
    nested = b"%PDF-1.4\n1 0 obj\n" + b"[" * 2_000_000 + b"\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    bomb = api.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("nested.pdf", nested), poll_interval_ms=200)
    assert bomb.status == "failed" and bomb.last_error.code == "invalid_file", bomb
    hostile = "<p>" + "<div>" * 200_000 + "deep" + "</div>" * 200_000
    deep = api.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("deep.html", hostile.encode()), poll_interval_ms=200)
    assert deep.status == "completed", deep
    assert api.vector_stores.search(store.id, query="cat purrs").data[0].filename == "cats.txt"

    # Another tenant sees nothing.
    other = client(server, server.new_user()[1])
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.search(store.id, query="cats")


def test_file_search_cites_only_retrieved_files(server, minilm, smol):  # noqa: F811
    embedder, _ = minilm
    name, token, _ = smol
    api = client(server, token)
    store = filled_store(api, embedder)
    response = api.responses.create(
        model=name,
        instructions="You are a helpful assistant.",
        input="Why does a cat purr?",
        tools=[{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 2}],
        include=["file_search_call.results"],
        max_output_tokens=80,
        temperature=0,
    )
    calls = [item for item in response.output if item.type == "file_search_call"]
    assert len(calls) == 1 and calls[0].status == "completed", response.output
    results = calls[0].results
    assert results and results[0].filename == "cats.txt", results
    retrieved = {r.file_id for r in results}
    message = next(item for item in response.output if item.type == "message")
    annotations = message.content[0].annotations
    assert all(a.type == "file_citation" and a.file_id in retrieved for a in annotations), annotations
    assert response.output_text

    # Streamed through the client's helper: the search call, then the text.
    with api.responses.stream(model=name, input="Why does a cat purr?", tools=[{"type": "file_search", "vector_store_ids": [store.id]}], max_output_tokens=40, temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.index("response.file_search_call.completed") < kinds.index("response.output_text.delta")
    assert final.output[0].type == "file_search_call"


def test_two_replicas_answer_alike(server, minilm):  # noqa: F811
    """Scale-out: an ingest on one replica is searched the same way on the other."""
    if not server.scale_out:
        pytest.skip("two replicas share PostgreSQL and S3 in the scale-out run")
    embedder, token = minilm
    proc, replica = start(tempfile.mkdtemp(prefix="mantle-e2e-replica-"), blob_url=server.blob_url)
    try:
        first, second = client(server, token), client(replica, token)
        store = filled_store(first, embedder)
        for query in ["Why does a cat purr?", "bond yields", "lava"]:
            a = [(d.file_id, round(d.score, 5)) for d in first.vector_stores.search(store.id, query=query).data]
            b = [(d.file_id, round(d.score, 5)) for d in second.vector_stores.search(store.id, query=query).data]
            assert a == b, (query, a, b)
        # An ingest through the second replica is seen by the first.
        done = second.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("owls.txt", b"Owls hunt at night and can turn their heads far around."), poll_interval_ms=200)
        assert done.status == "completed"
        assert first.vector_stores.search(store.id, query="owls turn their heads").data[0].filename == "owls.txt"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_new_revision_reindexes_while_the_old_one_answers(server, minilm):  # noqa: F811
    """The store names its own deployment; a new revision of the model is pushed and deployed under
    that name: searches keep their answers (queries embedded by the store's revision) until the
    background re-index swaps the store to the new revision."""
    _, token = minilm
    api = client(server, token)
    embedder = "mini-" + uuid.uuid4().hex[:6]
    deployed = deployment(server, minilm[0])
    repo = deployed["repo"]
    server.cli("deploy", embedder, f"{repo}@{deployed['commit']}")
    store = filled_store(api, embedder)
    first = api.vector_stores.retrieve(store.id).model_extra["embedding_revision"]
    assert first == f"{repo}@{deployed['commit']}"
    queries = ["Why does a cat purr?", "bond yields", "lava"]

    def answers():
        return [[(d.file_id, round(d.score, 4)) for d in api.vector_stores.search(store.id, query=q).data] for q in queries]

    before = answers()
    server.python(
        f"""
from huggingface_hub import HfApi
HfApi(token={token!r}).upload_file(path_or_fileobj=b"Re-exported; same weights.\\n", path_in_repo="NOTES.md", repo_id={repo!r})
""",
        env={"HF_ENDPOINT": server.endpoint},
    )
    verdict = wait_for_verdict(server, repo, token)
    assert not verdict["blocked"], verdict
    server.cli("undeploy", embedder)
    server.cli("deploy", embedder, f"{repo}@main")
    second = deployment(server, embedder)["commit"]
    assert f"{repo}@{second}" != first
    # The search wakes the re-indexer; until it swaps, the store's own revision answers.
    assert answers() == before
    deadline = time.time() + 120
    while (current := api.vector_stores.retrieve(store.id).model_extra)["embedding_revision"] == first:
        assert time.time() < deadline, current
        time.sleep(0.5)
    assert current["embedding_revision"] == f"{repo}@{second}" and current["reindex"] is None, current
    # Same weights under a new commit: the same answers, now from the new revision's vectors.
    assert answers() == before
    server.cli("undeploy", embedder)


def test_an_org_shares_its_files_stores_and_responses(server, minilm):  # noqa: F811
    """`organization=` on the official client: what a member makes for the org, every member
    reads and searches; outsiders get 404, and may not act for the org."""
    embedder, _ = minilm
    org = "org" + uuid.uuid4().hex[:8]
    server.cli("orgs", "create", org)
    _, maker = server.new_user(org=org)
    _, member = server.new_user(org=org, role="read")
    _, outsider = server.new_user()
    mine = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=maker, organization=org)
    store = filled_store(mine, embedder)
    theirs = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=member, organization=org)
    assert [s.id for s in theirs.vector_stores.list()] == [store.id]
    assert theirs.vector_stores.search(store.id, query="Why does a cat purr?").data[0].filename == "cats.txt"
    with pytest.raises(openai.PermissionDeniedError):
        theirs.vector_stores.delete(store.id)
    stranger = client(server, outsider)
    with pytest.raises(openai.NotFoundError):
        stranger.vector_stores.retrieve(store.id)
    assert stranger.files.list().data == []
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.endpoint + "/v1", api_key=outsider, organization=org).vector_stores.list()
