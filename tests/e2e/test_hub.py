"""The Hub API through the real, latest `huggingface_hub` client."""

import filecmp
import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors.numpy import save_file


def make_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Test model\n")
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "nested" / "deeper" / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(1000)))
    (root / "nested" / "random.bin").write_bytes(os.urandom(300_000))
    save_file({"w": np.arange(24, dtype=np.float32).reshape(4, 6), "b": np.ones(6, dtype=np.float16)}, str(root / "model.safetensors"))
    (root / "empty.txt").write_bytes(b"")
    (root / "données").mkdir()
    (root / "données" / "résumé #1 (final).txt").write_text("unicode, spaces and a hash sign")
    return root


def same_tree(a: Path, b: Path):
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file() and ".cache" not in p.parts)
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert files_a == files_b
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def test_upload_folder_and_download_with_default_client(server, alice, tmp_path):
    user, token = alice
    api = HfApi(endpoint=server.endpoint, token=token)
    assert api.whoami()["name"] == user
    repo = f"{user}/bert-tiny"
    url = api.create_repo(repo, private=True)
    assert url.repo_id == repo
    api.create_repo(repo, exist_ok=True)
    folder = make_folder(tmp_path / "src")
    info = api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="first upload")
    assert len(info.oid) == 40

    model = api.model_info(repo)
    assert model.sha == info.oid and model.private
    names = {s.rfilename for s in model.siblings}
    assert {"config.json", "model.safetensors", "nested/deeper/vocab.txt", "nested/random.bin", ".gitattributes"} <= names

    snap = Path(snapshot_download(repo, endpoint=server.endpoint, token=token, cache_dir=str(tmp_path / "cache")))
    assert snap.name == info.oid
    assert (snap / ".gitattributes").exists()
    for rel in ["config.json", "model.safetensors", "nested/deeper/vocab.txt", "nested/random.bin", "empty.txt", "données/résumé #1 (final).txt"]:
        assert filecmp.cmp(snap / rel, folder / rel, shallow=False), rel

    local = snapshot_download(repo, endpoint=server.endpoint, token=token, local_dir=str(tmp_path / "local"))
    for rel in ["config.json", "nested/random.bin"]:
        assert filecmp.cmp(Path(local) / rel, folder / rel, shallow=False)

    one = hf_hub_download(repo, "nested/random.bin", revision=info.oid, endpoint=server.endpoint, token=token, cache_dir=str(tmp_path / "c2"))
    assert filecmp.cmp(one, folder / "nested" / "random.bin", shallow=False)

    meta = api.get_safetensors_metadata(repo)
    tensors = meta.files_metadata["model.safetensors"].tensors
    assert tensors["w"].shape == [4, 6] and tensors["w"].dtype == "F32"
    assert tensors["b"].dtype == "F16"

    tree = list(api.list_repo_tree(repo, recursive=True))
    assert {"nested", "nested/deeper"} <= {t.path for t in tree if not hasattr(t, "size")}
    assert api.file_exists(repo, "config.json") and not api.file_exists(repo, "missing.json")
    # Uploading the same folder again changes nothing and makes no empty commit.
    api.upload_folder(folder_path=str(folder), repo_id=repo)
    assert api.model_info(repo).sha == info.oid


def test_multipart_lfs_upload_with_the_real_client(tmp_path):
    """A server that asks for multipart above 16 MiB: the client uploads parts, completes, verifies."""
    from conftest import start

    proc, srv = start(tempfile.mkdtemp(prefix="mantle-e2e-mp-"), {"MANTLE__HUB__MULTIPART_THRESHOLD": str(16 * 1024 * 1024), "MANTLE__HUB__MULTIPART_CHUNK": str(8 * 1024 * 1024)})
    try:
        user, token = srv.new_user()
        big = tmp_path / "up" / "shards.bin"
        big.parent.mkdir()
        big.write_bytes(os.urandom(30 * 1024 * 1024 + 12345))
        repo = f"{user}/multipart"
        out = srv.python(
            f"""
import filecmp, tempfile
from huggingface_hub import HfApi, hf_hub_download
api = HfApi(token={token!r})
api.create_repo({repo!r})
api.upload_folder(folder_path={str(big.parent)!r}, repo_id={repo!r})
info = api.model_info({repo!r}, files_metadata=True)
print([s.lfs.sha256 for s in info.siblings if s.rfilename == "shards.bin"][0])
p = hf_hub_download({repo!r}, "shards.bin", token={token!r}, cache_dir=tempfile.mkdtemp())
assert filecmp.cmp(p, {str(big)!r}, shallow=False)
""",
            env={"HF_HUB_DISABLE_XET": "1", "HF_ENDPOINT": srv.endpoint},
        )
        assert out.strip().splitlines()[-1] == hashlib.sha256(big.read_bytes()).hexdigest()
        # The server logs each multipart completion: the client really took the multipart path.
        assert "multipart upload completed" in (srv.data_dir / "server.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_filesystem_and_invalid_card(server, alice, tmp_path):
    from huggingface_hub import HfFileSystem

    user, token = alice
    api = HfApi(endpoint=server.endpoint, token=token)
    repo = f"{user}/fs"
    api.create_repo(repo)
    api.upload_folder(folder_path=str(make_folder(tmp_path / "src")), repo_id=repo)
    fs = HfFileSystem(endpoint=server.endpoint, token=token)
    names = {p.split("/", 2)[2] for p in fs.ls(repo, detail=False)}
    assert {"config.json", "nested", "model.safetensors"} <= names
    with fs.open(f"{repo}/nested/deeper/vocab.txt", "rb") as f:
        f.seek(4)
        assert f.read(5) == b"\ntok1"
    assert len(fs.glob(f"{repo}/**/*.txt")) >= 2
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_folder(folder_path=str(bad), repo_id=repo)


def test_large_file_goes_through_lfs(server, alice, tmp_path):
    """The Git LFS path (clients without hf_xet, or with HF_HUB_DISABLE_XET=1) still works."""
    user, token = alice
    repo = f"{user}/big-model"
    big = tmp_path / "up" / "weights.bin"
    big.parent.mkdir()
    with open(big, "wb") as f:
        for _ in range(42):
            f.write(os.urandom(1024 * 1024))
    save_file({"emb": np.random.rand(3000, 1000).astype(np.float32)}, str(tmp_path / "up" / "model.safetensors"))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    out = server.python(
        f"""
import filecmp, json, tempfile
from huggingface_hub import HfApi, hf_hub_download
api = HfApi(token={token!r})
api.create_repo({repo!r})
api.upload_folder(folder_path={str(big.parent)!r}, repo_id={repo!r}, commit_message="weights")
info = api.model_info({repo!r}, files_metadata=True)
lfs = {{s.rfilename: (s.lfs.sha256 if s.lfs else None) for s in info.siblings}}
p = hf_hub_download({repo!r}, "weights.bin", token={token!r}, cache_dir=tempfile.mkdtemp())
assert filecmp.cmp(p, {str(big)!r}, shallow=False)
meta = api.get_safetensors_metadata({repo!r})
print(json.dumps({{"lfs": lfs, "shape": meta.files_metadata["model.safetensors"].tensors["emb"].shape}}))
""",
        env={"HF_HUB_DISABLE_XET": "1", "HF_ENDPOINT": server.endpoint},
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["lfs"]["weights.bin"] == digest
    assert result["lfs"]["model.safetensors"] is not None
    assert result["shape"] == [3000, 1000]


def test_pinned_revisions_tags_and_branches(server, alice, tmp_path):
    user, token = alice
    api = HfApi(endpoint=server.endpoint, token=token)
    repo = f"{user}/versions"
    api.create_repo(repo)
    v1 = api.upload_file(path_or_fileobj=b"version one", path_in_repo="model.txt", repo_id=repo).oid
    api.create_tag(repo, tag="v1")
    api.create_branch(repo, branch="stable")
    v2 = api.upload_file(path_or_fileobj=b"version two", path_in_repo="model.txt", repo_id=repo).oid
    assert v1 != v2

    def fetch(revision):
        return Path(hf_hub_download(repo, "model.txt", revision=revision, endpoint=server.endpoint, token=token, cache_dir=str(tmp_path / uuid.uuid4().hex))).read_bytes()

    assert fetch("v1") == b"version one"
    assert fetch(v1) == b"version one"
    assert fetch("stable") == b"version one"
    assert fetch("main") == b"version two"
    assert fetch(v2) == b"version two"
    refs = api.list_repo_refs(repo)
    assert {b.name for b in refs.branches} == {"main", "stable"}
    assert [t.name for t in refs.tags] == ["v1"] and refs.tags[0].target_commit == v1
    commits = api.list_repo_commits(repo)
    assert [c.commit_id for c in commits[:2]] == [v2, v1]
    with pytest.raises(RevisionNotFoundError):
        fetch("no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "missing.txt", endpoint=server.endpoint, token=token, cache_dir=str(tmp_path / "m"))
    api.upload_file(path_or_fileobj=b"on stable", path_in_repo="extra.txt", repo_id=repo, revision="stable")
    assert api.list_repo_files(repo, revision="stable") == [".gitattributes", "extra.txt", "model.txt"]
    assert "extra.txt" not in api.list_repo_files(repo)
    api.delete_tag(repo, tag="v1")
    api.delete_branch(repo, branch="stable")
    assert api.list_repo_refs(repo).tags == []
    # A stale parent commit is a conflict.
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, parent_commit=v1)
    assert err.value.response.status_code == 409


def test_deletes(server, alice, tmp_path):
    user, token = alice
    api = HfApi(endpoint=server.endpoint, token=token)
    repo = f"{user}/deletes"
    api.create_repo(repo)
    api.upload_folder(folder_path=str(make_folder(tmp_path / "src")), repo_id=repo)
    api.delete_file("config.json", repo)
    api.delete_folder("nested", repo)
    api.delete_folder("données", repo)
    assert api.list_repo_files(repo) == [".gitattributes", "README.md", "empty.txt", "model.safetensors"]
    api.upload_folder(folder_path=str(make_folder(tmp_path / "src2")), repo_id=repo, delete_patterns=["*.md"])
    assert "README.md" in api.list_repo_files(repo)
    with pytest.raises(EntryNotFoundError):
        api.delete_file("never-existed.txt", repo)
    api.delete_repo(repo)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo)
    api.delete_repo(repo, missing_ok=True)


def test_access_denied_to_others_and_anonymous(server, alice, tmp_path):
    user, token = alice
    bob, bob_token = server.new_user()
    _, reader = server.new_user(role="read")
    api = HfApi(endpoint=server.endpoint, token=token)
    api.create_repo(f"{user}/private", private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=f"{user}/private")
    api.create_repo(f"{user}/public")
    api.upload_file(path_or_fileobj=b"open", path_in_repo="o.txt", repo_id=f"{user}/public")

    for caller in (HfApi(endpoint=server.endpoint, token=bob_token), HfApi(endpoint=server.endpoint, token=False)):
        with pytest.raises(RepositoryNotFoundError):
            caller.model_info(f"{user}/private")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(f"{user}/private", "s.txt", endpoint=server.endpoint, token=caller.token, cache_dir=str(tmp_path / uuid.uuid4().hex))
        assert f"{user}/private" not in {m.id for m in caller.list_models(author=user)}
        # Public repos are readable by everyone.
        assert caller.model_info(f"{user}/public").id == f"{user}/public"
    # Writing needs the owner's write token.
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=server.endpoint, token=bob_token).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=f"{user}/public")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=server.endpoint, token=reader).create_repo("anything")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=server.endpoint, token=False).create_repo(f"{user}/anon")
    assert err.value.response.status_code == 401
    # Visibility changes are enforced at once.
    api.update_repo_settings(f"{user}/public", private=True)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=server.endpoint, token=False).model_info(f"{user}/public")


def test_orgs_share_repos_with_members(server, tmp_path):
    org = "org" + uuid.uuid4().hex[:8]
    server.cli("orgs", "create", org)
    member, member_token = server.new_user(org=org)
    late, late_token = server.new_user()
    outsider, outsider_token = server.new_user()
    api = HfApi(endpoint=server.endpoint, token=member_token)
    api.create_repo(f"{org}/shared", private=True)
    api.upload_file(path_or_fileobj=b"team", path_in_repo="t.txt", repo_id=f"{org}/shared")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=server.endpoint, token=late_token).model_info(f"{org}/shared")
    server.cli("orgs", "add-member", org, late)
    late_api = HfApi(endpoint=server.endpoint, token=late_token)
    assert late_api.whoami()["orgs"][0]["name"] == org
    late_api.upload_file(path_or_fileobj=b"more", path_in_repo="m.txt", repo_id=f"{org}/shared")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=server.endpoint, token=outsider_token).model_info(f"{org}/shared")


def test_hf_endpoint_environment_and_datasets(server, alice, tmp_path):
    user, token = alice
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(json.dumps({"text": f"row {i}"}) for i in range(500)))
    out = server.python(
        f"""
import filecmp, tempfile
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
api = HfApi()
api.create_repo({user!r} + "/corpus", repo_type="dataset")
api.upload_folder(folder_path={str(data)!r}, repo_id={user!r} + "/corpus", repo_type="dataset")
p = hf_hub_download({user!r} + "/corpus", "train.jsonl", repo_type="dataset", cache_dir=tempfile.mkdtemp())
assert filecmp.cmp(p, {str(data / 'train.jsonl')!r}, shallow=False)
snap = snapshot_download({user!r} + "/corpus", repo_type="dataset", cache_dir=tempfile.mkdtemp())
print(api.dataset_info({user!r} + "/corpus").sha)
""",
        env={"HF_ENDPOINT": server.endpoint, "HF_TOKEN": token},
    )
    assert len(out.strip().splitlines()[-1]) == 40
    # A dataset and a model of the same name are different repos.
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=server.endpoint, token=token).model_info(f"{user}/corpus")


def test_hf_command_line(server, alice, tmp_path):
    """The `hf` command that ships with huggingface_hub: upload a folder, download it back."""
    import subprocess
    import sys

    user, token = alice
    hf = str(Path(sys.executable).parent / "hf")
    env = dict(os.environ, HF_ENDPOINT=server.endpoint, HF_TOKEN=token)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.json").write_text('{"b": 2}')
    run = lambda *args: subprocess.run([hf, *args], env=env, capture_output=True, text=True, timeout=300)
    res = run("auth", "whoami")
    assert res.returncode == 0 and user in res.stdout, res.stderr
    res = run("upload", f"{user}/via-hf", str(src), ".")
    assert res.returncode == 0, res.stdout + res.stderr
    res = run("download", f"{user}/via-hf", "--local-dir", str(tmp_path / "out"))
    assert res.returncode == 0, res.stdout + res.stderr
    for rel in ["a.txt", "sub/b.json"]:
        assert filecmp.cmp(src / rel, tmp_path / "out" / rel, shallow=False)
