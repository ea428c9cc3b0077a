"""Upload and download a large file through the real huggingface_hub client against Mantle, with
default settings (Xet, through hf_xet) and on the Git LFS path (HF_HUB_DISABLE_XET=1), and compare
with a plain local copy of the same file on the same disk (the physical limit here). Then the
dedup case: a second revision of the file with 1 MiB changed in the middle, pushed from an empty
client cache; bytes sent and stored are read from the server's own counters. `mantle push` and
`mantle pull` (the CLI, on the LFS path) are timed beside them, so the CLI's choice of path is
measured against the client's Xet path.

Usage: python bench/transfer.py [--size-mib 1024] [--rounds 3]
Prints a table of medians and the ratios to the peers.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_file(path, size_mib, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())


def counter(endpoint, name):
    with urllib.request.urlopen(endpoint + "/metrics") as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


UPLOAD = """
import time, sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo(sys.argv[1], exist_ok=True)
start = time.perf_counter()
api.upload_file(path_or_fileobj=sys.argv[2], path_in_repo="weights.bin", repo_id=sys.argv[1])
print(time.perf_counter() - start)
"""

DOWNLOAD = """
import time, sys
from huggingface_hub import hf_hub_download
start = time.perf_counter()
hf_hub_download(sys.argv[1], "weights.bin", cache_dir=sys.argv[2])
print(time.perf_counter() - start)
"""


def run(code, env, *args):
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"client failed:\n{res.stdout}\n{res.stderr}")
    return float(res.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bin", default=os.environ.get("MANTLE_BIN", str(ROOT / "target" / "release" / "mantle")))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mantle-bench-", dir=os.environ.get("MANTLE_BENCH_DIR")))
    size = args.size_mib << 20
    token = "bench-admin-token-" + uuid.uuid4().hex
    port = free_port()
    server = subprocess.Popen(
        [args.bin, "serve", "--data", str(work / "data"), "--addr", f"127.0.0.1:{port}"],
        env=dict(os.environ, MANTLE_ADMIN_TOKEN=token, RUST_LOG="warn"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(endpoint + "/healthz", timeout=1)
            break
        except Exception:
            time.sleep(0.1)

    def env(xet):
        """Default client settings, a cache of its own (as on a fresh machine)."""
        home = tempfile.mkdtemp(prefix="hf-home-", dir=work)
        extra = {} if xet else {"HF_HUB_DISABLE_XET": "1"}
        return dict(os.environ, HF_ENDPOINT=endpoint, HF_TOKEN=token, HF_HOME=home, HF_HUB_DISABLE_PROGRESS_BARS="1", **extra)

    times = {key: [] for key in ["cp", "cp+fsync", "xet up", "lfs up", "xet down", "lfs down", "curl xet", "curl lfs", "mantle up", "mantle down"]}
    cli_env = dict(os.environ, MANTLE_URL=endpoint, MANTLE_TOKEN=token)
    try:
        for round_no in range(args.rounds):
            # Fresh content per path and round, so no upload is skipped as already stored.
            files = {}
            for path in ["xet", "lfs"]:
                files[path] = work / f"{path}-{round_no}.bin"
                random_file(files[path], args.size_mib, round_no * 2 + (path == "lfs"))
            # Peers: a plain copy of the same file on the same disk (into the page cache, as `cp` does),
            # and the same copy flushed to the disk with fsync (the disk's own limit).
            target = work / f"copy-{round_no}.bin"
            start = time.perf_counter()
            shutil.copyfile(files["xet"], target)
            times["cp"].append(time.perf_counter() - start)
            target = work / f"copy-sync-{round_no}.bin"
            start = time.perf_counter()
            shutil.copyfile(files["xet"], target)
            with open(target, "rb+") as f:
                os.fsync(f.fileno())
            times["cp+fsync"].append(time.perf_counter() - start)
            for path in ["xet", "lfs"]:
                repo = f"admin/bench-{path}-{round_no}-{uuid.uuid4().hex[:6]}"
                times[f"{path} up"].append(run(UPLOAD, env(path == "xet"), repo, str(files[path])))
                cache = work / f"cache-{path}-{round_no}"
                times[f"{path} down"].append(run(DOWNLOAD, env(path == "xet"), repo, str(cache)))
                downloaded = next(cache.rglob("weights.bin"))
                assert downloaded.stat().st_size == size
                # The server alone: a plain GET with curl into /dev/null (no client-side disk or
                # Python cost); a Xet-stored file is rebuilt from its xorbs, an LFS one read whole.
                if shutil.which("curl"):
                    start = time.perf_counter()
                    subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", f"authorization: Bearer {token}", f"{endpoint}/{repo}/resolve/main/weights.bin"], check=True)
                    times[f"curl {path}"].append(time.perf_counter() - start)
            # The CLI: its own fresh file (so nothing is already stored), pushed and pulled.
            folder = work / f"mantle-{round_no}"
            folder.mkdir()
            random_file(folder / "weights.bin", args.size_mib, round_no * 2 + 101)
            repo = f"admin/bench-mantle-{round_no}-{uuid.uuid4().hex[:6]}"
            for key, command in [("mantle up", ["push", str(folder), repo]), ("mantle down", ["pull", repo, str(work / f"pulled-{round_no}")])]:
                start = time.perf_counter()
                subprocess.run([args.bin, *command], check=True, capture_output=True, env=cli_env)
                times[key].append(time.perf_counter() - start)
            assert (work / f"pulled-{round_no}" / "weights.bin").stat().st_size == size
        # Files are removed only at the end: on this disk, deleting a large file right before a timed
        # write slows that write (discard), which would skew whichever side came next.

        # Dedup: the last Xet file again, with 1 MiB in the middle changed, from an empty cache.
        edited = work / "edited.bin"
        shutil.copyfile(files["xet"], edited)
        with open(edited, "rb+") as f:
            f.seek(size // 2)
            f.write(os.urandom(1 << 20))
        repo = f"admin/bench-edit-{uuid.uuid4().hex[:6]}"
        run(UPLOAD, env(True), repo, str(files["xet"]))
        sent0, stored0 = counter(endpoint, "mantle_xet_received_bytes_total"), counter(endpoint, "mantle_xet_stored_bytes_total")
        edit_seconds = run(UPLOAD, env(True), repo, str(edited))
        sent = counter(endpoint, "mantle_xet_received_bytes_total") - sent0
        stored = counter(endpoint, "mantle_xet_stored_bytes_total") - stored0
    finally:
        server.terminate()
        server.wait(timeout=10)

    mib = size / (1024 * 1024)
    med = {key: statistics.median(values) for key, values in times.items() if values}
    rows = [
        ("local copy, page cache (cp)", "cp", None),
        ("local copy + fsync (disk limit)", "cp+fsync", None),
        ("upload_file, default (Xet)", "xet up", "lfs up"),
        ("upload_file, HF_HUB_DISABLE_XET=1 (LFS)", "lfs up", None),
        ("hf_hub_download, default (Xet)", "xet down", "lfs down"),
        ("hf_hub_download, HF_HUB_DISABLE_XET=1", "lfs down", None),
        ("server alone: curl GET, Xet-stored file", "curl xet", "curl lfs"),
        ("server alone: curl GET, LFS-stored file", "curl lfs", None),
        ("mantle push (CLI, LFS path)", "mantle up", "lfs up"),
        ("mantle pull (CLI)", "mantle down", "lfs down"),
    ]
    print(f"\nTransfer of a {mib:.0f} MiB file, median of {args.rounds} rounds (latest huggingface_hub + hf_xet)\n")
    print(f"| {'operation':<42} | {'seconds':>8} | {'MiB/s':>7} | {'vs cp':>6} | {'vs cp+fsync':>11} | {'vs LFS path':>11} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 9}|{'-' * 8}|{'-' * 13}|{'-' * 13}|")
    for label, key, peer in rows:
        if key not in med:
            continue
        seconds = med[key]
        vs_lfs = f"{med[peer] / seconds:>11.2f}" if peer else f"{'':>11}"
        print(f"| {label:<42} | {seconds:>8.2f} | {mib / seconds:>7.0f} | {med['cp'] / seconds:>6.2f} | {med['cp+fsync'] / seconds:>11.2f} | {vs_lfs} |")
    print("\nRatios are speed relative to the peer (above 1 is faster). Targets: Xet >= 1.0 of the LFS path both ways, >= 0.50 of cp+fsync.")
    if "mantle up" in med and "xet up" in med:
        print(f"mantle push vs upload_file through Xet: {med['xet up'] / med['mantle up']:.2f}x; mantle pull vs hf_hub_download through Xet: {med['xet down'] / med['mantle down']:.2f}x")
    print(f"\nDedup: second revision with 1 MiB changed in the middle, pushed from an empty client cache in {edit_seconds:.2f} s")
    print(f"| {'bytes':<10} | {'MiB':>8} | {'of the file':>11} |")
    print(f"|{'-' * 12}|{'-' * 10}|{'-' * 13}|")
    for label, value in [("sent", sent), ("stored", stored)]:
        print(f"| {label:<10} | {value / (1 << 20):>8.2f} | {100 * value / size:>10.2f}% |")
    print("\nTarget: the edit sends under 2% of the file.")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
