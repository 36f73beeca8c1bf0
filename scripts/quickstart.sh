#!/usr/bin/env bash
# The main job on a fresh machine: set-up, then a jth server on embedded defaults (local state dir
# ./.jth, a dev CA and certificates made on first run, sandbox and cgroup plugins as this host allows),
# example invokes (a script, a function, a hono app, one that writes an artifact, one that fails),
# status and artifacts, and a clean stop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

JTH=(node bin/jth.mjs)
PORT=${JTH_QUICKSTART_PORT:-8443}
STATE=${JTH_QUICKSTART_STATE:-.jth}
export JTH_SERVER="https://127.0.0.1:$PORT" JTH_CERT="$STATE/pki/clients/dev.crt" JTH_KEY="$STATE/pki/clients/dev.key" JTH_CA="$STATE/pki/ca.crt"
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "What this host supports (jth doctor)"
"${JTH[@]}" doctor || true

step "Starting the server on embedded defaults (state: $STATE, port $PORT)"
cfg=$(mktemp /tmp/jth-quickstart-XXXX.json)
printf '{ "server": { "stateDir": "%s", "port": %s } }\n' "$(realpath -m "$STATE")" "$PORT" > "$cfg"
log=$(mktemp /tmp/jth-quickstart-XXXX.log)
"${JTH[@]}" server --config "$cfg" 2> "$log" &
server=$!
cleanup() {
  if kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"; wait "$server" 2>/dev/null || true
  fi
  rm -f "$cfg"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  grep -q 'listening on' "$log" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "quickstart: the server did not start" >&2; exit 1; }
  sleep 0.2
done
grep -q 'listening on' "$log" || { cat "$log" >&2; echo "quickstart: the server did not start in 20 s" >&2; exit 1; }
grep -o '"note":"[^"]*"' "$log" | sed 's/"note":"\(.*\)"/note: \1/' >&2 || true
grep 'listening on' "$log" >&2

step "A script: jth invoke examples/hello.ts"
"${JTH[@]}" invoke examples/hello.ts

step "A function with input: jth invoke examples/fn.ts --data '{\"name\":\"jth\"}'"
"${JTH[@]}" invoke examples/fn.ts --data '{"name":"jth"}'; echo

step "A hono app (fetch module): jth invoke examples/hono-app.ts --path /echo --method POST"
"${JTH[@]}" invoke examples/hono-app.ts --path /echo --method POST --data '{"hello":"hono"}'; echo

step "The same script on the deno runtime"
"${JTH[@]}" invoke examples/hello.ts --runtime deno || echo "(deno runtime not available here)" >&2

step "A job that writes an artifact, then its status and artifacts"
id=$("${JTH[@]}" invoke examples/artifact.ts --detach)
"${JTH[@]}" logs "$id" -f
"${JTH[@]}" status "$id"
out=$(mktemp -d /tmp/jth-artifacts-XXXX)
"${JTH[@]}" artifacts "$id" --out "$out"
ls -l "$out"

step "A job that fails: its exit code, and the error at the user's source line"
set +e
"${JTH[@]}" invoke examples/fail.ts
echo "exit code: $?" >&2
set -e

step "Your jobs"
"${JTH[@]}" jobs

step "Stopping the server cleanly"
kill -TERM "$server"; wait "$server" 2>/dev/null || true
echo "quickstart: done. Server log: $log" >&2
