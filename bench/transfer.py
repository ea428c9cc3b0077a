"""Upload and download a large file through the real huggingface_hub client against Mantle, and
compare with a plain local copy of the same file on the same disk (the physical limit here).

Usage: python bench/transfer.py [--size-mib 1024] [--rounds 3]
Prints a table of medians and the ratios to copy speed.
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


def child(code, env):
    """Runs client code in a fresh interpreter (HF_* variables are read at import) and returns its
    last stdout line, the seconds it measured."""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
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
    source = work / "src" / "weights.bin"
    source.parent.mkdir()
    with open(source, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(1024 * 1024))
    size = source.stat().st_size

    token = "bench-admin-token-" + uuid.uuid4().hex
    port = free_port()
    data = work / "data"
    server = subprocess.Popen(
        [args.bin, "serve", "--data", str(data), "--addr", f"127.0.0.1:{port}"],
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
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_TOKEN=token, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1")

    plain_copies, copies, uploads, downloads, raw = [], [], [], [], []
    try:
        for round_no in range(args.rounds):
            # Peers: a plain copy of the same file on the same disk (into the page cache, as `cp` does),
            # and the same copy flushed to the disk with fsync (the disk's own limit).
            target = work / f"copy-{round_no}.bin"
            start = time.perf_counter()
            shutil.copyfile(source, target)
            plain_copies.append(time.perf_counter() - start)
            target = work / f"copy-sync-{round_no}.bin"
            start = time.perf_counter()
            shutil.copyfile(source, target)
            with open(target, "rb+") as f:
                os.fsync(f.fileno())
            copies.append(time.perf_counter() - start)

            # Fresh content each round, so the upload is never skipped as already stored.
            with open(source, "rb+") as f:
                f.write(os.urandom(1024 * 1024))
            repo = f"admin/bench-{round_no}-{uuid.uuid4().hex[:6]}"
            uploads.append(child(f"""
import time
from huggingface_hub import HfApi
api = HfApi()
api.create_repo({repo!r})
start = time.perf_counter()
api.upload_file(path_or_fileobj={str(source)!r}, path_in_repo="weights.bin", repo_id={repo!r})
print(time.perf_counter() - start)
""", env))
            cache = work / f"cache-{round_no}"
            downloads.append(child(f"""
import time
from huggingface_hub import hf_hub_download
start = time.perf_counter()
hf_hub_download({repo!r}, "weights.bin", cache_dir={str(cache)!r})
print(time.perf_counter() - start)
""", env))
            downloaded = next(cache.rglob("weights.bin"))
            assert downloaded.stat().st_size == size
            # The server alone: the same GET with curl into /dev/null (no client-side disk or Python cost).
            if shutil.which("curl"):
                start = time.perf_counter()
                subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", f"authorization: Bearer {token}", f"{endpoint}/{repo}/resolve/main/weights.bin"], check=True)
                raw.append(time.perf_counter() - start)
        # Files are removed only at the end: on this disk, deleting a large file right before a timed
        # write slows that write (discard), which would skew whichever side came next.
    finally:
        server.terminate()
        server.wait(timeout=10)

    mib = size / (1024 * 1024)
    plain, copy = statistics.median(plain_copies), statistics.median(copies)
    rows = [
        ("local copy, page cache (cp)", plain),
        ("local copy + fsync (disk limit)", copy),
        ("upload_file through Mantle", statistics.median(uploads)),
        ("hf_hub_download from Mantle", statistics.median(downloads)),
    ]
    if raw:
        rows.append(("server alone: curl GET > /dev/null", statistics.median(raw)))
    print(f"\nTransfer of a {mib:.0f} MiB file, median of {args.rounds} rounds (huggingface_hub, HF_HUB_DISABLE_XET=1, LFS path)\n")
    print(f"| {'operation':<36} | {'seconds':>8} | {'MiB/s':>7} | {'vs cp':>6} | {'vs cp+fsync':>11} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 9}|{'-' * 8}|{'-' * 13}|")
    for label, seconds in rows:
        print(f"| {label:<36} | {seconds:>8.2f} | {mib / seconds:>7.0f} | {plain / seconds:>6.2f} | {copy / seconds:>11.2f} |")
    print("\nRatios are speed relative to the peer (above 1 is faster). Targets: download >= 0.50, upload >= 0.30.")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
