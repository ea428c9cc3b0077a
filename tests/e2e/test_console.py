"""The web console in a real browser: Debian's chromium driven by Playwright against the real
binary. Signs in, browses the hub to a repo and its verdict, deploys, chats in the playground
with streamed text, watches a live chart move after traffic, finds the deploy in the audit log;
a hostile model card runs nothing; a read-only token sees no admin controls and its direct API
calls are refused. Screenshots of every view go to $MANTLE_ARTIFACTS/console."""

import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import openai
import pytest

from conftest import push_folder, push_smollm2, models_dir, skip_unless_ci
from test_embeddings import minilm  # noqa: F401 (a fixture)
from test_vetting import wait_for_verdict

import playwright.sync_api as playwright_api  # installed by scripts/test.sh; a missing one is an error, not a skip

ARTIFACTS = Path(os.environ.get("MANTLE_ARTIFACTS") or tempfile.mkdtemp(prefix="mantle-artifacts-")) / "console"
HOSTILE_CARD = """---
license: apache-2.0
---
# Totally normal model <script>window.__pwned = 'script'</script>

<img src=x onerror="window.__pwned = 'img'">

Read the [docs](javascript:window.__pwned='link') or [this](JAVASCRIPT:alert(1)) or [safe](https://example.com/docs).

<a href="javascript:window.__pwned='anchor'">click me</a> <svg onload="window.__pwned='svg'"></svg>

- **bold** and `code <b>x</b>`
"""


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        skip_unless_ci("Debian's chromium is not installed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_console(browser, server, token, viewport=(1280, 800)):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.goto(server.endpoint + "/")
    page.get_by_label("Mantle token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#nav:not([hidden])")
    assert token not in page.url
    return page


def nav(page, name):
    """A link of the console's navigation (repo names may contain the same words)."""
    return page.locator("#nav").get_by_role("link", name=name, exact=True)


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def fits_width(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_console_flow_from_hub_to_audit(server, browser):
    models_dir()
    _, owner_token, repo = push_smollm2(server)
    assert wait_for_verdict(server, repo, owner_token)["status"] == "safe"
    page = open_console(browser, server, server.admin)
    # The console's page and assets carry a strict policy.
    response = page.request.get(server.endpoint + "/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy

    # Hub: the repo with its verdict badge, then its page.
    nav(page, "Hub").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=repo))
    row.get_by_text("safe").wait_for()
    assert row.get_by_text("gguf").is_visible()
    shot(page, "hub")
    page.get_by_role("link", name=repo).click()
    page.get_by_role("heading", name=repo).wait_for()
    page.locator(".markdown h2", has_text="SmolLM2").wait_for()
    shot(page, "repo-card")
    page.get_by_role("tab", name="Files").click()
    page.get_by_role("cell", name="SmolLM2-135M-Instruct.Q4_1.gguf").wait_for()
    page.get_by_role("tab", name="History").click()
    page.get_by_role("table", name="Commits").wait_for()
    # Any commit's verdict, from its history row.
    page.get_by_role("link", name="Verdict of").first.click()
    page.get_by_text("Verdict:").wait_for()
    assert "?rev=" in page.url
    page.get_by_role("tab", name="Vetting").click()
    page.get_by_role("table", name="Policy").wait_for()
    assert page.get_by_text("Verdict:").is_visible()
    shot(page, "vetting")

    # Deploy from the repo page.
    name = "console-" + uuid.uuid4().hex[:6]
    page.locator("#deploy-name").fill(name)
    page.locator("#deploy-context").fill("1024")
    page.locator("#deploy-batch").fill("2")
    page.get_by_role("button", name="Deploy", exact=True).click()
    page.get_by_text(f"Deployed {name}").wait_for()

    # Playground: the answer grows token by token, then shows its fingerprint and usage.
    nav(page, "Playground").click()
    page.get_by_label("Model").select_option(name)
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("48")
    page.get_by_label("Message").fill("What is the capital of France? Answer in two sentences.")
    page.evaluate("""() => {
        window.__lengths = [];
        new MutationObserver(() => {
            const el = document.querySelector('#pg-answer');
            if (el) window.__lengths.push(el.textContent.length);
        }).observe(document.querySelector('#pg-log'), { subtree: true, childList: true, characterData: true });
    }""")
    page.get_by_role("button", name="Send").click()
    page.locator(".chat .muted", has_text="completion tokens").wait_for(timeout=120_000)
    lengths = page.evaluate("window.__lengths")
    assert len(set(lengths)) >= 5, f"the answer should arrive in pieces, saw lengths {lengths}"
    assert page.locator("#pg-answer").inner_text().strip()
    assert page.locator(".chat .muted").inner_text().startswith("fp_")
    shot(page, "playground")

    # Deployments: a live chart moves after traffic, without a reload.
    nav(page, "Deployments").click()
    section = page.locator(f"section[data-deployment='{name}']")
    section.wait_for()
    api = openai.OpenAI(base_url=server.endpoint + "/v1", api_key=server.admin, max_retries=0)
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            api.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)

    worker = threading.Thread(target=traffic)
    worker.start()
    rps = section.locator("figure").first
    try:
        # Polled from here: the page's policy forbids the eval that wait_for_function uses.
        for _ in range(120):
            if float(rps.get_attribute("data-max") or 0) > 0:
                break
            page.wait_for_timeout(500)
        assert float(rps.get_attribute("data-max") or 0) > 0, "the requests/s chart did not move"
    finally:
        stop.set()
        worker.join()
    assert int(section.locator("figure").first.get_attribute("data-points")) >= 2
    assert section.get_by_text("resident").is_visible()
    shot(page, "deployments")

    # Releases: a route with a canary shows its traffic split and its timeline.
    route_name = "console-route-" + uuid.uuid4().hex[:6]
    other = "canary-" + uuid.uuid4().hex[:6]
    server.cli("deploy", other, f"{repo}@main", "--context", "512", "--max-batch", "1")
    server.cli("routes", "set", route_name, "--to", name, "--reason", "first release")
    server.cli("routes", "canary", route_name, "--to", other, "--weight", "30", "--reason", "trying b")
    nav(page, "Releases").click()
    card = page.locator(f"section[data-route='{route_name}']")
    card.wait_for()
    card.get_by_text(f"70% {name} · 30% canary {other}").wait_for()
    history = card.get_by_role("table", name=f"History of {route_name}")
    history.get_by_text("first release").wait_for()
    history.get_by_text("trying b").wait_for()
    assert card.get_by_role("img", name="Canary share per change (%)").is_visible()
    shot(page, "releases")

    # Usage by deployment, then the audit log with the deploy and a verified chain.
    page.goto(server.endpoint + "/#/usage?by=deployment")
    page.get_by_role("cell", name=name, exact=True).wait_for()
    shot(page, "usage")
    nav(page, "Audit").click()
    page.locator("#audit-chain", has_text="verified").wait_for()
    page.locator("#audit-action").fill("deployment.create")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("cell", name=f"deployment:{name}").wait_for()
    shot(page, "audit")

    # Phone width: every view reflows without sideways scrolling.
    page.set_viewport_size({"width": 390, "height": 844})
    for view in ["#/hub", f"#/repo/{repo}/files", "#/deployments", "#/playground", "#/releases", "#/usage", "#/audit"]:
        page.goto(server.endpoint + "/" + view)
        page.wait_for_selector("main h1")
        page.wait_for_timeout(300)
        assert fits_width(page), view
        shot(page, "phone-" + view.strip("#/").split("/")[0])
    page.close()


def test_hostile_model_card_runs_nothing(server, browser, tmp_path):
    user, token = server.new_user()
    repo = f"{user}/hostile"
    (tmp_path / "weights.txt").write_text("not a model")
    push_folder(server, token, repo, {"weights.txt": tmp_path / "weights.txt"}, HOSTILE_CARD)
    page = open_console(browser, server, token)
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.endpoint + f"/#/repo/{repo}/card")
    card = page.locator(".markdown")
    card.locator("a", has_text="safe").wait_for()
    # The markup shows as text; nothing of it became an element.
    assert "<script>" in card.inner_text() and "onerror" in card.inner_text()
    assert card.locator("script, img, svg, iframe, [onerror], [onload], [onclick]").count() == 0
    hrefs = card.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert hrefs and not any(h.lower().startswith("javascript") for h in hrefs), hrefs
    assert "https://example.com/docs" in hrefs
    shot(page, "hostile-card")
    # The neutralised link goes nowhere when followed.
    card.locator("a[href='#']").first.click()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert not errors, errors
    page.close()


def test_read_only_token_sees_no_admin_controls(server, browser):
    owner, owner_token = server.new_user()
    _, reader_token = server.new_user(role="read")
    page = open_console(browser, server, reader_token)
    assert not nav(page, "Audit").is_visible()
    page.goto(server.endpoint + "/#/audit")
    page.get_by_text("needs a site admin token").wait_for()
    page.goto(server.endpoint + "/#/hub")
    page.wait_for_selector("main h1")
    assert page.locator("#deploy, #override-why, button:has-text('Undeploy')").count() == 0
    page.goto(server.endpoint + "/#/deployments")
    page.wait_for_selector("main h1")
    assert page.locator("button:has-text('Undeploy')").count() == 0
    # Its direct calls to the admin API are refused.
    status = page.evaluate(
        """async (token) => (await fetch('/api/admin/deployments', { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'x', repo: 'a/b' }) })).status""",
        reader_token,
    )
    assert status == 403
    audit = page.evaluate("async (token) => (await fetch('/api/admin/audit', { headers: { Authorization: `Bearer ${token}` } })).status", reader_token)
    assert audit == 403
    # Keyboard: the first Tab reaches the skip link, and every control has a label.
    page.goto(server.endpoint + "/#/usage")
    page.reload()
    page.wait_for_selector("main h1:has-text('Usage')")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    unlabelled = page.evaluate("[...document.querySelectorAll('input, select, textarea')].filter(e => !e.closest('label') && !e.getAttribute('aria-label')).length")
    assert unlabelled == 0
    shot(page, "read-only")
    page.close()


def test_findings_and_an_audited_override(server, browser, tmp_path):
    import pickle

    from test_vetting import Evil

    user, token = server.new_user()
    repo = f"{user}/flagged"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil(), protocol=4))
    push_folder(server, token, repo, {"evil.pkl": tmp_path / "evil.pkl"}, "---\nlicense: apache-2.0\n---\n# Flagged\n")
    assert wait_for_verdict(server, repo, token)["status"] == "unsafe"
    page = open_console(browser, server, server.admin)
    page.goto(server.endpoint + f"/#/repo/{repo}/vetting")
    findings = page.get_by_role("table", name="Findings")
    row = findings.get_by_role("row").filter(has_text="pickle.dangerous_global")
    row.wait_for()
    assert "evil.pkl" in row.inner_text() and "unsafe" in row.inner_text()
    assert page.locator("main").get_by_text("blocked").first.is_visible()
    page.locator("#override-finding").select_option(index=0)
    page.get_by_label("Written justification").fill("Fixture for the console test; never deployed.")
    page.get_by_role("button", name="Accept this finding").click()
    page.get_by_text("Override recorded").wait_for()
    page.goto(server.endpoint + f"/#/repo/{repo}/card")
    page.goto(server.endpoint + f"/#/repo/{repo}/vetting")
    page.get_by_role("cell", name="accepted by admin: Fixture for the console test; never deployed.").wait_for()
    shot(page, "override")
    page.goto(server.endpoint + "/#/audit?action=override.add")
    page.get_by_role("cell", name=f"namespace:{user}").first.wait_for()
    page.close()


def test_retrieval_view_makes_a_store_searches_and_shows_citations(server, browser, minilm, tmp_path):  # noqa: F811
    """The Retrieval view: a store made from an uploaded file, its ingestion status, a search
    showing the chunk and its score, and an answer whose citations name only retrieved files."""
    from test_openai import push_and_deploy

    encoder, _ = minilm
    chat, token, _ = push_and_deploy(server, "--context", "2048")
    notes = tmp_path / "cats.txt"
    notes.write_text("Cats purr when they are content. A purring cat is usually relaxed.")
    page = open_console(browser, server, token)
    nav(page, "Retrieval").click()
    page.wait_for_selector("main h1:has-text('Retrieval')")
    page.get_by_label("Name").fill("console kb")
    page.get_by_label("Embedding model").fill(encoder)
    page.get_by_label("Files").set_input_files(str(notes))
    page.get_by_role("button", name="Create").click()
    page.wait_for_selector("main h1:has-text('Vector store console kb')")
    for _ in range(60):
        if page.locator("table[aria-label=Files] .badge.completed").count() == 1:
            break
        page.wait_for_timeout(500)
        page.reload()
        page.wait_for_selector("main h1:has-text('Vector store console kb')")
    assert page.locator("table[aria-label=Files] .badge.completed").count() == 1
    page.get_by_label("Query").fill("why do cats purr")
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("table[aria-label='Search results']")
    assert "Cats purr" in page.locator("table[aria-label='Search results']").inner_text()
    page.get_by_label("Model").fill(chat)
    page.get_by_label("Question").fill("Why do cats purr?")
    page.get_by_role("button", name="Ask").click()
    page.wait_for_selector("table[aria-label=Sources]", timeout=60_000)
    assert "cats.txt" in page.locator("table[aria-label=Sources]").inner_text()
    for title in page.locator("sup.cite").evaluate_all("els => els.map(e => e.title)"):
        assert title == "cats.txt"
    shot(page, "retrieval")
    page.close()
