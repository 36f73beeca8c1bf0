#!/usr/bin/env bash
# Set up a fresh machine for jth: Debian packages (when root and missing) and npm dependencies.
# Idempotent and quiet when everything is already there. Used by the quickstart and the test command.
set -euo pipefail
cd "$(dirname "$0")/.."

want=()
command -v bwrap >/dev/null || want+=(bubblewrap)
command -v setpriv >/dev/null || want+=(util-linux)
command -v openssl >/dev/null || want+=(openssl)
# The sandbox's seccomp filter is built by libseccomp through Debian's Python binding (not pyenv's).
/usr/bin/python3 -c 'import seccomp' >/dev/null 2>&1 || want+=(python3-seccomp)
if [ "${JTH_SETUP_VM:-0}" = 1 ]; then
  command -v qemu-system-x86_64 >/dev/null || want+=(qemu-system-x86)
  dpkg -s busybox-static >/dev/null 2>&1 || want+=(busybox-static)
  command -v cpio >/dev/null || want+=(cpio)
  # The test command only: the seccomp tests build a tiny static raw-syscall probe (no libc needed).
  command -v gcc >/dev/null || want+=(gcc)
  # The test command only: the web console's suite drives Debian's Chromium (test/console.e2e.test.ts).
  [ -x /usr/bin/chromium ] || want+=(chromium)
fi
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "jth setup: installing Debian packages: ${want[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  else
    echo "jth setup: missing ${want[*]}; install them (apt-get install ${want[*]}) for the sandbox and its tests" >&2
  fi
fi

# npm dependencies: install when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "jth setup: installing npm dependencies (better-sqlite3 may build from source: ~2 min)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
# The fast CLI path (dist/) is rebuilt when sources changed.
npm run --silent build >/dev/null
