#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, type-check, lint, the host suite, then the cgroup v2
# VM lane (limits are only enforceable in a pure cgroup v2 guest on this kind of host).
set -euo pipefail
cd "$(dirname "$0")/.."
JTH_SETUP_VM=1 bash scripts/setup.sh
echo "== type-check and lint" >&2
npm run --silent typecheck
npm run --silent lint
echo "== host suite (vitest)" >&2
npx vitest run
echo "== mutation check of the cleanup property suite" >&2
npm run --silent test:mutation
echo "== cgroup v2 VM lane" >&2
npm run --silent test:vm
