#!/bin/sh
# Installs the benchmark's outside tools from Debian: wrk (load generator) and nginx (the baseline). Called by
# bench/run.ts when either is missing; safe to run again. Needs root (or sudo) and a reachable Debian mirror.
# With arguments, installs those packages instead, where their command is missing (`setup.sh valgrind`: bench:hot's
# instruction counts).
set -eu

need=""
if [ $# -gt 0 ]; then
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || need="$need $tool"; done
else
  command -v wrk >/dev/null 2>&1 || need="$need wrk"
  [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need="$need nginx"
fi
[ -z "$need" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Keep the package's maintainer scripts from starting a system nginx on port 80: the bench runs its own.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  added_policy=1
fi
cleanup() { [ -n "$added_policy" ] && $SUDO rm -f "$policy"; return 0; }
trap cleanup EXIT

echo "bench/setup.sh: installing$need" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
