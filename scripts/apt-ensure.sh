#!/usr/bin/env bash
# Install the named Debian packages if any is missing. Runs apt-get update once per call.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "apt-ensure: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "apt-ensure: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Tests start their own redis-server, keepalived, nginx...: keep the packages' own
# services from starting at install time (Debian's policy-rc.d convention).
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created=1
fi
trap '[ "$created" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
