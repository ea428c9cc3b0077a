"""Xet with the real clients at default settings: huggingface_hub + hf_xet push and pull files of
every size through Mantle's CAS API, plain HTTP downloads get the same bytes, an older client
still works, a small edit of a large file sends and stores only what changed, and a second
replica serves what the first stored."""

import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from conftest import skip_unless_ci, start


def metric(server, name):
    """A counter's value from /metrics (0 when absent)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.endpoint + "/metrics") as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0


def random_file(path, size, seed):
    """`size` pseudo-random bytes (incompressible, reproducible), written in 8 MiB pieces."""
    import numpy as np

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n
    return path


# Client homes hold downloaded gigabytes: removed when the module is done.
HOMES = []


@pytest.fixture(autouse=True, scope="module")
def remove_client_homes():
    yield
    for home in HOMES:
        shutil.rmtree(home, ignore_errors=True)


def client_env(server, token, **extra):
    """Default client settings, an empty cache of its own (as on another machine)."""
    home = tempfile.mkdtemp(prefix="hf-home-")
    HOMES.append(home)
    return dict(os.environ, HF_ENDPOINT=server.endpoint, HF_TOKEN=token, HF_HOME=home, HF_HUB_DISABLE_PROGRESS_BARS="1", **extra)


def run_python(code, env, python=sys.executable):
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=1200)
    assert res.returncode == 0, f"child failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def test_default_client_pushes_and_pulls_every_size_through_xet(server, alice, tmp_path):
    user, token = alice
    repo = f"{user}/sizes"
    src = tmp_path / "src"
    random_file(src / "eleven.bin", 11 * 1024 * 1024 + 7, 1)
    random_file(src / "folder" / "forty.bin", 40 * 1024 * 1024 + 3, 2)
    (src / "folder" / "config.json").write_text('{"tiny": true}')
    big = random_file(tmp_path / "gig" / "model.safetensors", 1024 * 1024 * 1024 + 11, 3)
    received = metric(server, "mantle_xet_received_bytes_total")
    env = client_env(server, token)
    run_python(
        f"""
from huggingface_hub import HfApi
api = HfApi()
api.create_repo({repo!r})
api.upload_file(path_or_fileobj={str(src / "eleven.bin")!r}, path_in_repo="eleven.bin", repo_id={repo!r})
api.upload_folder(folder_path={str(src / "folder")!r}, path_in_repo="folder", repo_id={repo!r})
""",
        env,
    )
    hf = str(Path(sys.executable).parent / "hf")
    res = subprocess.run([hf, "upload", repo, str(big), "model.safetensors"], env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout + res.stderr
    # Every LFS-mode file went through Xet: the CAS received at least their bytes.
    lfs_bytes = (11 << 20) + (40 << 20) + (1 << 30)
    assert metric(server, "mantle_xet_received_bytes_total") - received >= lfs_bytes

    # Downloads through Xet (hf_hub_download, snapshot_download, hf download) ...
    reconstructions = metric(server, "mantle_xet_reconstructions_total")
    env = client_env(server, token)
    out = run_python(
        f"""
from huggingface_hub import HfApi, hf_hub_download, snapshot_download, get_hf_file_metadata, hf_hub_url
meta = get_hf_file_metadata(hf_hub_url({repo!r}, "eleven.bin"))
assert meta.xet_file_data is not None, "no Xet hash on HEAD"
print(hf_hub_download({repo!r}, "eleven.bin"))
print(snapshot_download({repo!r}, allow_patterns=["folder/*"]))
""",
        env,
    )
    eleven, snapshot = out.strip().splitlines()[-2:]
    assert filecmp.cmp(eleven, src / "eleven.bin", shallow=False)
    for rel in ["folder/forty.bin", "folder/config.json"]:
        assert filecmp.cmp(Path(snapshot) / rel, src / rel, shallow=False)
    res = subprocess.run([hf, "download", repo, "model.safetensors", "--local-dir", str(tmp_path / "dl")], env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout + res.stderr
    assert filecmp.cmp(tmp_path / "dl" / "model.safetensors", big, shallow=False)
    assert metric(server, "mantle_xet_reconstructions_total") - reconstructions >= 3

    # ... and through plain HTTP, as clients without hf_xet fetch them.
    out = run_python(f"from huggingface_hub import snapshot_download\nprint(snapshot_download({repo!r}))", client_env(server, token, HF_HUB_DISABLE_XET="1"))
    plain = Path(out.strip().splitlines()[-1])
    assert filecmp.cmp(plain / "eleven.bin", src / "eleven.bin", shallow=False)
    assert filecmp.cmp(plain / "folder" / "forty.bin", src / "folder" / "forty.bin", shallow=False)
    assert filecmp.cmp(plain / "model.safetensors", big, shallow=False)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_small_edit_of_a_large_file_sends_and_stores_only_what_changed(server, alice, tmp_path):
    user, token = alice
    repo = f"{user}/tuned"
    size = 200 * 1024 * 1024
    first = random_file(tmp_path / "v1" / "weights.bin", size, 11)
    second = tmp_path / "v2" / "weights.bin"
    second.parent.mkdir()
    data = bytearray(first.read_bytes())
    middle = size // 2
    data[middle : middle + (1 << 20)] = os.urandom(1 << 20)
    second.write_bytes(bytes(data))
    del data
    push = f"""
import sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo({repo!r}, exist_ok=True)
api.upload_file(path_or_fileobj=sys.argv[1], path_in_repo="weights.bin", repo_id={repo!r})
"""
    # Each push from an empty client cache (another machine): the server's dedup API is what
    # finds the chunks already stored.
    before = metric(server, "mantle_xet_received_bytes_total"), metric(server, "mantle_xet_stored_bytes_total")
    subprocess.run([sys.executable, "-c", push, str(first)], env=client_env(server, token), check=True, capture_output=True, timeout=1200)
    middle_counts = metric(server, "mantle_xet_received_bytes_total"), metric(server, "mantle_xet_stored_bytes_total")
    assert middle_counts[0] - before[0] >= size
    subprocess.run([sys.executable, "-c", push, str(second)], env=client_env(server, token), check=True, capture_output=True, timeout=1200)
    after = metric(server, "mantle_xet_received_bytes_total"), metric(server, "mantle_xet_stored_bytes_total")
    sent, stored = after[0] - middle_counts[0], after[1] - middle_counts[1]
    assert sent <= 4 * 1024 * 1024, f"the 1 MiB edit sent {sent} bytes"
    assert stored <= 4 * 1024 * 1024, f"the 1 MiB edit stored {stored} bytes"
    out = run_python(f"from huggingface_hub import hf_hub_download\nprint(hf_hub_download({repo!r}, 'weights.bin'))", client_env(server, token))
    assert filecmp.cmp(out.strip().splitlines()[-1], second, shallow=False)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_an_older_client_still_pushes_and_pulls(server, alice, tmp_path):
    """huggingface_hub 1.19 asks the LFS batch endpoint first, offering Xet."""
    python = os.environ.get("MANTLE_OLD_HF_PYTHON")
    if not python:
        skip_unless_ci("MANTLE_OLD_HF_PYTHON (a python with huggingface_hub 1.19) not set")
    user, token = alice
    repo = f"{user}/old-client"
    f = random_file(tmp_path / "up" / "w.bin", 12 * 1024 * 1024 + 5, 21)
    for disable in ["0", "1"]:
        env = client_env(server, token, HF_HUB_DISABLE_XET=disable)
        out = run_python(
            f"""
import huggingface_hub
assert huggingface_hub.__version__.startswith("1.19"), huggingface_hub.__version__
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
api.create_repo({repo!r}, exist_ok=True)
api.upload_file(path_or_fileobj={str(f)!r}, path_in_repo="w{disable}.bin", repo_id={repo!r})
print(hf_hub_download({repo!r}, "w{disable}.bin"))
""",
            env,
            python=python,
        )
        assert filecmp.cmp(out.strip().splitlines()[-1], f, shallow=False)


def test_a_second_replica_serves_what_the_first_stored(server, alice, tmp_path):
    if not server.scale_out:
        pytest.skip("two replicas share PostgreSQL and S3 in the scale-out run")
    user, token = alice
    repo = f"{user}/replicated"
    f = random_file(tmp_path / "up" / "w.bin", 30 * 1024 * 1024 + 1, 31)
    run_python(f"from huggingface_hub import HfApi\napi = HfApi()\napi.create_repo({repo!r})\napi.upload_file(path_or_fileobj={str(f)!r}, path_in_repo='w.bin', repo_id={repo!r})", client_env(server, token))
    proc, replica = start(tempfile.mkdtemp(prefix="mantle-e2e-replica-"), blob_url=server.blob_url)
    try:
        for disable in ["0", "1"]:
            out = run_python(f"from huggingface_hub import hf_hub_download\nprint(hf_hub_download({repo!r}, 'w.bin'))", client_env(replica, token, HF_HUB_DISABLE_XET=disable))
            assert filecmp.cmp(out.strip().splitlines()[-1], f, shallow=False)
        assert metric(replica, "mantle_xet_reconstructions_total") >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_two_accounts_push_the_same_file_from_one_machine(server, tmp_path):
    """hf_xet remembers what it uploaded (per CAS URL). Pushing the same bytes for a second account
    from the same machine must not lean on the first account's xorbs, which that account may not
    use: the client uploads them again (proving possession) and the push succeeds."""
    f = random_file(tmp_path / "up" / "w.bin", 24 * 1024 * 1024 + 9, 41)
    home = tempfile.mkdtemp(prefix="hf-home-shared-")
    HOMES.append(home)
    stored = metric(server, "mantle_xet_stored_bytes_total")
    for n in range(2):
        user, token = server.new_user()
        env = dict(client_env(server, token), HF_HOME=home)
        out = run_python(
            f"""
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
api.create_repo("{user}/same", private=True)
api.upload_file(path_or_fileobj={str(f)!r}, path_in_repo="w.bin", repo_id="{user}/same")
print(hf_hub_download("{user}/same", "w.bin"))
""",
            env,
        )
        assert filecmp.cmp(out.strip().splitlines()[-1], f, shallow=False)
    # The bytes are stored once.
    assert metric(server, "mantle_xet_stored_bytes_total") - stored < 2 * f.stat().st_size
