#!/bin/sh
# @module
# Build a minimal root directory for the isolation-chroot plugin's `chroot` mode:
#   scripts/make-rootfs.sh DIR
# It holds /usr/bin/node (or $NODE) and the shared libraries ldd lists for it, busybox-static as /bin/sh
# and its applets when installed, a minimal /etc, and the empty mount points the sandbox binds over
# (/proc, /dev, /work, /app, /tmp). The result is root-owned and world-readable, never writable by jobs.
set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "Usage: $0 DIR (builds a minimal chroot root in DIR)" >&2
  exit 2
fi
DIR=$1
NODE=${NODE:-/usr/bin/node}
BUSYBOX=${BUSYBOX:-/usr/bin/busybox}

if [ ! -x "$NODE" ]; then
  echo "Cannot find node at \"$NODE\": install it or set NODE=/path/to/node" >&2
  exit 1
fi

umask 022
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# Merged /usr, as on Debian: the loader path /lib64/ld-linux-x86-64.so.2 resolves inside the root.
mkdir -p "$DIR/usr/bin" "$DIR/usr/lib" "$DIR/usr/lib64" "$DIR/etc"
for d in bin lib lib64 sbin; do
  [ -e "$DIR/$d" ] || ln -s "usr/$( [ "$d" = sbin ] && echo bin || echo "$d")" "$DIR/$d"
done
# Mount points: the root is bound read-only, so bwrap cannot create them at run time.
for d in proc dev work app tmp; do mkdir -p "$DIR/$d"; done

# Copy one file to the same path in the root, following symlinks (the root has no other copies).
copy() {
  dest="$DIR$1"
  mkdir -p "$(dirname "$dest")"
  cp -L "$1" "$dest"
}

copy_with_libs() {
  copy "$1"
  # ldd prints "name => /path (addr)" or "/path (addr)"; static binaries print no path at all.
  ldd "$1" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | while read -r lib; do
    copy "$lib"
  done
}

copy_with_libs "$NODE"
# Jobs run /usr/bin/node whatever the host path of the binary was.
[ "$NODE" = /usr/bin/node ] || mv "$DIR$NODE" "$DIR/usr/bin/node"

if [ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1; then
  # Only a static busybox (busybox-static) works without more libraries.
  cp "$BUSYBOX" "$DIR/usr/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [ -e "$DIR/usr/bin/$applet" ] || ln -s busybox "$DIR/usr/bin/$applet"
  done
else
  echo "Note: no static busybox at \"$BUSYBOX\"; the root has no shell (apt-get install busybox-static)" >&2
fi

# Placeholders: the plugin binds the job's own passwd, group, hosts and hostname over these.
printf 'root:x:0:0:root:/nonexistent:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$DIR/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$DIR/etc/group"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$DIR/etc/hosts"
printf 'jth\n' >"$DIR/etc/hostname"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$DIR/etc/nsswitch.conf"

chmod 0755 "$DIR"
echo "Built a minimal root in $DIR ($(du -sh "$DIR" | cut -f1))"
