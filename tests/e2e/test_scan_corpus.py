"""The scanner on a corpus built by code: every malicious file caught, every benign one safe."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import corpus  # noqa: E402


def test_corpus_has_no_miss_and_no_false_alarm(server, tmp_path):
    expect = corpus.build(str(tmp_path / "corpus"))
    res = server.cli("scan", str(tmp_path / "corpus"), "--json", check=False)
    assert res.returncode == 1, res.stderr
    got = {os.path.basename(r["path"]): r for r in json.loads(res.stdout)}
    wrong = {name: (want, got[name]["verdict"], [f["code"] for f in got[name]["findings"]]) for name, want in expect.items() if got[name]["verdict"] != want}
    assert not wrong, wrong
    assert sum(1 for v in expect.values() if v == "unsafe") >= 20 and sum(1 for v in expect.values() if v == "safe") >= 15
