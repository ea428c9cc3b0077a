// Retrieval view of the Mantle console: the caller's vector stores (files, ingestion status and
// errors), a new store from uploaded files, a search box showing the chunks found and their
// scores, and a Responses playground whose answer shows its citations. A plain client of
// /v1/files, /v1/vector_stores and /v1/responses; text only ever reaches the page through
// textContent (the DOM helpers app.js passes in).

function storeRow(ui, store) {
  const counts = store.file_counts || {};
  const link = ui.h("a", { href: `#/retrieval/${encodeURIComponent(store.id)}`, text: store.name || store.id });
  return [link, ui.badge(store.status), `${counts.completed ?? 0}/${counts.total ?? 0}`, String(counts.failed ?? 0), store.embedding_model || "", (store.embedding_revision || "").replace(/@(.{12}).*/, "@$1"), ui.when(new Date(store.created_at * 1000).toISOString())];
}

/** Uploads `files` (a FileList) for retrieval; their ids. */
async function upload(ui, files) {
  const ids = [];
  for (const file of files) {
    const form = new FormData();
    form.append("purpose", "assistants");
    form.append("file", file, file.name);
    ids.push((await ui.api("/v1/files", { method: "POST", body: form })).id);
  }
  return ids;
}

function newStoreForm(ui) {
  const name = ui.h("input", { id: "store-name", placeholder: "knowledge base" });
  const model = ui.h("input", { id: "store-model", placeholder: "embedding deployment (empty: the only one)" });
  const files = ui.h("input", { id: "store-files", type: "file", multiple: true });
  const status = ui.h("p", { class: "muted", role: "status" });
  const form = ui.h("form", { class: "card", "aria-label": "New vector store", onsubmit: async (e) => {
    e.preventDefault();
    status.textContent = "Uploading…";
    try {
      const ids = await upload(ui, files.files);
      const body = { name: name.value, file_ids: ids };
      if (model.value) body.embedding_model = model.value;
      const store = await ui.api("/v1/vector_stores", { method: "POST", json: body });
      location.hash = `#/retrieval/${encodeURIComponent(store.id)}`;
    } catch (err) {
      status.textContent = String(err.message || err);
    }
  } }, ui.h("h2", { text: "New vector store" }), ui.h("div", { class: "row" }, ui.field("Name", name), ui.field("Embedding model", model), ui.field("Files", files), ui.h("button", { type: "submit", text: "Create" })), status);
  return form;
}

function searchBox(ui, store) {
  const query = ui.h("input", { id: "search-query", placeholder: "search this store" });
  const results = ui.h("div", { id: "search-results" });
  const form = ui.h("form", { class: "card", "aria-label": "Search", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const page = await ui.api(`/v1/vector_stores/${encodeURIComponent(store.id)}/search`, { method: "POST", json: { query: query.value, max_num_results: 10 } });
      results.replaceChildren(page.data.length
        ? ui.table(["#Score", "File", "Chunk"], page.data.map((d) => [Number(d.score).toFixed(3), d.filename, ui.h("p", { class: "chunk", text: d.content.map((c) => c.text).join("\n") })]), "Search results")
        : ui.h("p", { class: "muted", text: "Nothing found." }));
    } catch (err) {
      results.replaceChildren(ui.h("p", { class: "error", role: "alert", text: String(err.message || err) }));
    }
  } }, ui.h("h2", { text: "Search" }), ui.h("div", { class: "row" }, ui.field("Query", query), ui.h("button", { type: "submit", text: "Search" })), results);
  return form;
}

/** The answer's text with each citation marker shown as a numbered link to its source. */
function cited(ui, text, annotations) {
  const out = ui.h("p", { class: "answer" });
  let at = 0;
  const chars = Array.from(text);
  for (const note of annotations.filter((a) => a.type === "file_citation").sort((a, b) => a.index - b.index)) {
    const end = chars.indexOf("]", note.index);
    if (note.index < at || end < 0) continue;
    out.append(chars.slice(at, note.index).join(""));
    out.append(ui.h("sup", { class: "cite", title: note.filename, text: chars.slice(note.index, end + 1).join("") }));
    at = end + 1;
  }
  out.append(chars.slice(at).join(""));
  return out;
}

function playground(ui, store) {
  const model = ui.h("input", { id: "rag-model", placeholder: "model (a chat deployment)" });
  const question = ui.h("textarea", { id: "rag-question", rows: 3, placeholder: "ask a question about these files" });
  const answer = ui.h("div", { id: "rag-answer" });
  const form = ui.h("form", { class: "card", "aria-label": "Ask with file search", onsubmit: async (e) => {
    e.preventDefault();
    answer.replaceChildren(ui.h("p", { class: "muted", text: "Thinking…" }));
    try {
      const response = await ui.api("/v1/responses", { method: "POST", json: { model: model.value, input: question.value, tools: [{ type: "file_search", vector_store_ids: [store.id], max_num_results: 4 }], include: ["file_search_call.results"], max_output_tokens: 300 } });
      const search = response.output.find((o) => o.type === "file_search_call");
      const message = response.output.find((o) => o.type === "message");
      const part = message?.content?.[0] || { text: "", annotations: [] };
      const sources = (search?.results || []).map((r, i) => [`[${i + 1}]`, r.filename, Number(r.score).toFixed(3), ui.h("p", { class: "chunk", text: r.text })]);
      answer.replaceChildren(cited(ui, part.text || "", part.annotations || []), sources.length ? ui.table(["Source", "File", "#Score", "Chunk"], sources, "Sources") : ui.h("p", { class: "muted", text: "No source was found." }));
    } catch (err) {
      answer.replaceChildren(ui.h("p", { class: "error", role: "alert", text: String(err.message || err) }));
    }
  } }, ui.h("h2", { text: "Ask (Responses API with file_search)" }), ui.field("Model", model), ui.field("Question", question), ui.h("button", { type: "submit", text: "Ask" }), answer);
  return form;
}

/** The Retrieval view: every store, or one store with its files, a search box and a playground. */
export async function retrievalView(ui, storeId) {
  if (!storeId) {
    const stores = (await ui.api("/v1/vector_stores?limit=100")).data || [];
    const list = stores.length
      ? ui.table(["Store", "Status", "Files ready", "#Failed", "Embedding model", "Revision", "Created"], stores.map((s) => storeRow(ui, s)), "Vector stores")
      : ui.h("p", { class: "muted", text: "No vector stores yet." });
    return ui.view("Retrieval", ui.h("section", { class: "card" }, list), newStoreForm(ui));
  }
  const [store, files] = await Promise.all([ui.api(`/v1/vector_stores/${encodeURIComponent(storeId)}`), ui.api(`/v1/vector_stores/${encodeURIComponent(storeId)}/files?limit=100`)]);
  const uploads = new Map(((await ui.api("/v1/files")).data || []).map((f) => [f.id, f.filename]));
  const rows = files.data.map((f) => [uploads.get(f.id) || f.id, ui.badge(f.status), f.last_error ? `${f.last_error.code}: ${f.last_error.message}` : "", ui.bytes(f.usage_bytes), JSON.stringify(f.attributes || {})]);
  ui.view(`Vector store ${store.name || store.id}`,
    ui.h("section", { class: "card" }, ui.h("p", {}, ui.badge(store.status), ` ${store.file_counts.completed}/${store.file_counts.total} files ready · embedded by ${store.embedding_model} (${store.embedding_revision})`),
      ui.table(["File", "Status", "Error", "#Size", "Attributes"], rows, "Files")),
    searchBox(ui, store), playground(ui, store));
}
