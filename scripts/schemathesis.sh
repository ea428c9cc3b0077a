#!/usr/bin/env bash
# Fuzzes Mantle's own API from its OpenAPI document with schemathesis, on a throwaway server on the
# embedded default: any 5xx, a crash, or a response that breaks the documented schema fails.
# Needs: $MANTLE_BIN (the release binary) and schemathesis (in $VENV, as scripts/test.sh sets up).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${MANTLE_BIN:?set MANTLE_BIN to the mantle binary}"
ST="${SCHEMATHESIS:-schemathesis}"
DIR=$(mktemp -d)
TOKEN="st-admin-$RANDOM$RANDOM$RANDOM"
printf '%s' "$TOKEN" > "$DIR/token"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MANTLE__AUTH__AUDIT_CHECKPOINT_INTERVAL=0 "$BIN" serve --data "$DIR/data" --addr "127.0.0.1:$PORT" --admin-token-file "$DIR/token" >"$DIR/server.log" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
# Plain Python for the few setup calls (no curl needed on a fresh machine).
post() {
  python3 - "http://127.0.0.1:$PORT$1" "$TOKEN" "$2" <<'PY'
import sys, urllib.request
url, token, body = sys.argv[1], sys.argv[2], sys.argv[3]
request = urllib.request.Request(url, data=body.encode() if body else None, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
urllib.request.urlopen(request, timeout=5).read()
PY
}
for _ in $(seq 1 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/openapi.json', timeout=1)" 2>/dev/null && break
  sleep 0.1
done
# A user, an org and a repo, so generated requests meet real rows as well as missing ones.
post /api/admin/users '{"name":"fuzzer"}'
post /api/admin/orgs '{"name":"acme"}'
post /api/repos/create '{"name":"m","organization":"acme"}'
H="Authorization: Bearer $TOKEN"

fuzz() {
  "$ST" run "http://127.0.0.1:$PORT/openapi.json" \
    --header "$H" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" \
    --seed 11 \
    --request-timeout 10 "$@"
}
# Token revocation goes last: it may revoke the token the run authenticates with.
REVOKE="DELETE /api/admin/tokens/{id}"
status=0
fuzz --exclude-name "$REVOKE" || status=$?
fuzz --include-name "$REVOKE" || status=$?
if ! kill -0 "$PID" 2>/dev/null; then
  echo "the server died during the run:" >&2
  tail -n 50 "$DIR/server.log" >&2
  exit 1
fi
if grep -q "panicked" "$DIR/server.log"; then
  echo "the server panicked during the run:" >&2
  grep -A5 "panicked" "$DIR/server.log" >&2
  exit 1
fi
exit "$status"
