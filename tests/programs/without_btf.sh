#!/bin/sh
# Runs a command without the kernel's BTF: /sys/kernel/btf is hidden behind
# an empty tmpfs in this (private) mount namespace, so no struct layout can
# be read. Run under `unshare --mount --propagation private`, after
# without_tracefs.sh if both are wanted; the host is not touched.
set -e
mount -t tmpfs -o ro none /sys/kernel/btf
exec "$@"
