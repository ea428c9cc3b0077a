"""Scanner benchmark: Mantle, picklescan and modelscan on the same files, each in one invocation per
file: the test corpus (detections and false alarms side by side), a 1 GiB PyTorch-zip checkpoint,
an opcode-dense pickle (1.5 million small dicts) and a bytes-heavy pickle (100 blobs of 4 MiB).
Wall time and peak memory come from /usr/bin/time. Prints tables.

Usage: python bench/scan.py [--mantle target/release/mantle] [--work DIR]
"""

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(cmd):
    """Runs one scan; returns (exit code, seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = res.stderr.strip().splitlines()
    peak_kib = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return res.returncode, seconds, peak_kib / 1024


def tools(mantle, venv_bin):
    return {
        "mantle": lambda path: [mantle, "scan", str(path)],
        "picklescan": lambda path: [str(venv_bin / "picklescan"), "--path", str(path)],
        "modelscan": lambda path: [str(venv_bin / "modelscan"), "-p", str(path)],
    }


def flagged(tool, code):
    # Exit codes: mantle 1 = unsafe; picklescan 1 = dangerous imports; modelscan 1 = issues found.
    return code == 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mantle", default=os.environ.get("MANTLE_BIN", str(ROOT / "target" / "release" / "mantle")))
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    venv_bin = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="mantle-scan-bench-", dir=args.work))
    runners = tools(args.mantle, venv_bin)

    # 1. The corpus.
    expect = corpus.build(str(work / "corpus"))
    detect = {name: {"caught": 0, "missed": [], "false_alarms": [], "errors": 0} for name in runners}
    for file, want in sorted(expect.items()):
        for name, cmd in runners.items():
            code, _, _ = run(cmd(work / "corpus" / file))
            hit = flagged(name, code)
            if code not in (0, 1):
                detect[name]["errors"] += 1
            if want == "unsafe":
                if hit:
                    detect[name]["caught"] += 1
                else:
                    detect[name]["missed"].append(file)
            elif hit:
                detect[name]["false_alarms"].append(file)
    n_bad = sum(1 for v in expect.values() if v == "unsafe")
    n_good = len(expect) - n_bad
    print(f"\nDetection on the corpus ({n_bad} malicious, {n_good} benign files; one invocation per file)\n")
    print(f"| {'tool':<11} | {'caught':>8} | {'missed':>6} | {'false alarms':>12} | {'errors':>6} |")
    print(f"|{'-' * 13}|{'-' * 10}|{'-' * 8}|{'-' * 14}|{'-' * 8}|")
    for name, d in detect.items():
        print(f"| {name:<11} | {d['caught']:>3} / {n_bad:<2} | {len(d['missed']):>6} | {len(d['false_alarms']):>12} | {d['errors']:>6} |")
    for name, d in detect.items():
        if d["missed"]:
            print(f"  {name} missed: {', '.join(d['missed'])}")
        if d["false_alarms"]:
            print(f"  {name} false alarms: {', '.join(d['false_alarms'])}")

    # 2. Large files.
    big = work / "big"
    big.mkdir()
    corpus.torch_zip(str(big / "checkpoint_1gib.pt"), n_tensors=16, payload=lambda i: bytes(64 * 1024 * 1024))
    with open(big / "opcode_dense.pkl", "wb") as f:
        pickle.dump([{"id": i, "name": f"item{i}", "score": i * 0.5} for i in range(1_500_000)], f, protocol=4)
    with open(big / "bytes_heavy.pkl", "wb") as f:
        pickle.dump([os.urandom(4 * 1024 * 1024) for _ in range(100)], f, protocol=4)
    print("\nSpeed and peak memory (one invocation each; median of 3 for Mantle)\n")
    print(f"| {'file':<24} | {'size MiB':>8} | {'tool':<11} | {'seconds':>8} | {'peak MiB':>8} | {'Mantle speedup':>14} |")
    print(f"|{'-' * 26}|{'-' * 10}|{'-' * 13}|{'-' * 10}|{'-' * 10}|{'-' * 16}|")
    for file in ["checkpoint_1gib.pt", "opcode_dense.pkl", "bytes_heavy.pkl"]:
        path = big / file
        size = path.stat().st_size / (1024 * 1024)
        results = {}
        for name, cmd in runners.items():
            rounds = 3 if name == "mantle" else 1
            samples = [run(cmd(path)) for _ in range(rounds)]
            samples.sort(key=lambda s: s[1])
            results[name] = samples[len(samples) // 2]
        mantle_seconds = results["mantle"][1]
        for name, (code, seconds, peak) in results.items():
            speedup = "" if name == "mantle" else f"{seconds / mantle_seconds:.0f}x"
            print(f"| {file:<24} | {size:>8.0f} | {name:<11} | {seconds:>8.2f} | {peak:>8.0f} | {speedup:>14} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
