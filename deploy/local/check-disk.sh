#!/usr/bin/env bash
# Refuse a fresh install that cannot fit, before pip half-fills the disk.
#
# The virtual environment takes about 6.5 GiB (torch with its CUDA libraries
# is most of it), and pip needs room in the temporary folder to unpack wheels.
# A full disk otherwise surfaces as "OSError: [Errno 28]" deep in pip's output.
#
# Usage: check-disk.sh DIR
# Settings (environment):
#   FLYWHEEL_INSTALL_MIN_FREE_GB  free space DIR needs, in GiB (default 7)
#   FLYWHEEL_INSTALL_MIN_TMP_GB   free space ${TMPDIR:-/tmp} needs when it is on
#                                 another filesystem, in GiB (default 2)
set -euo pipefail

dir=${1:?usage: check-disk.sh DIR}
need_gb=${FLYWHEEL_INSTALL_MIN_FREE_GB:-7}
need_tmp_gb=${FLYWHEEL_INSTALL_MIN_TMP_GB:-2}
tmp=${TMPDIR:-/tmp}

for setting in FLYWHEEL_INSTALL_MIN_FREE_GB FLYWHEEL_INSTALL_MIN_TMP_GB; do
  value=${!setting:-0}
  if ! [[ $value =~ ^[0-9]+$ ]]; then
    echo "flywheel setup: $setting must be a whole number of GiB, not '$value'." >&2
    exit 2
  fi
done

free_kib() { df -Pk "$1" | awk 'NR == 2 { print $4 }'; }
device() { df -Pk "$1" | awk 'NR == 2 { print $1 }'; }

mkdir -p "$dir"
have_kib=$(free_kib "$dir")
want_kib=$((need_gb * 1024 * 1024))
if [ "$(device "$dir")" = "$(device "$tmp")" ]; then
  want_kib=$((want_kib + need_tmp_gb * 1024 * 1024))
  need_gb=$((need_gb + need_tmp_gb))
elif [ "$(free_kib "$tmp")" -lt $((need_tmp_gb * 1024 * 1024)) ]; then
  echo "flywheel setup: the temporary folder $tmp has $(($(free_kib "$tmp") / 1048576)) GiB free;" \
    "pip needs about $need_tmp_gb GiB there to unpack wheels." >&2
  echo "  Free space there, or point TMPDIR at a folder with room." >&2
  exit 1
fi

if [ "$have_kib" -lt "$want_kib" ]; then
  echo "flywheel setup: $(cd "$dir" && pwd) has $((have_kib / 1048576)) GiB free;" \
    "the install needs about $need_gb GiB (torch and its CUDA libraries, plus pip's temporary files)." >&2
  echo "  Free space (old clones, stale .venv folders, ~/.cache/pip), then run make again." >&2
  echo "  To install anyway, lower FLYWHEEL_INSTALL_MIN_FREE_GB (now ${FLYWHEEL_INSTALL_MIN_FREE_GB:-7})." >&2
  exit 1
fi
