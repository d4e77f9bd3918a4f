#!/bin/sh
# Runs a command where tracefs cannot be mounted: every tracefs and debugfs
# mount is detached in this (private) mount namespace, and /sys/kernel is
# hidden behind a read-only tmpfs that keeps only btf, so there is no
# directory to mount tracefs on. Run under
# `unshare --mount --propagation private`; the host is not touched.
set -e
for m in $(awk '{for(i=1;i<=NF;i++) if($i=="-"){ if($(i+1)=="tracefs" || $(i+1)=="debugfs") print $5; break}}' /proc/self/mountinfo | sort -r); do umount -l "$m"; done
keep=$(mktemp -d)
mount --bind /sys/kernel/btf "$keep"
mount -t tmpfs none /sys/kernel
mkdir /sys/kernel/btf
mount --move "$keep" /sys/kernel/btf
rmdir "$keep"
mount -o remount,ro /sys/kernel
exec "$@"
