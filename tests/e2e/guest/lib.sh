# Helpers shared by the e2e guests' init scripts (guest/init.sh, guest/host-init.sh), copied
# into each initramfs as /lib.sh and sourced.

t() { echo "T+$(cut -d' ' -f1 /proc/uptime)s $*"; }
pass() { echo "E2E CHECK $1 PASS${2:+ $2}"; }
fail() { echo "E2E CHECK $1 FAIL $2"; FAILED=1; }
# check NAME WHY cmd...: PASS or FAIL by cmd's exit status
check() { local _n=$1 _why=$2; shift 2; if "$@"; then pass $_n "$_why"; else fail $_n "$_why"; fi; }
# wait (up to 60 s) for the host to answer "GO $1" on the console
wait_host() {
  echo "E2E READY $1"
  while read -t 60 -r line; do [ "$line" = "GO $1" ] && return 0; done
  return 1
}
# tmo SECS cmd...: run cmd, give up (without waiting for it) after SECS; USB calls may block in D state
tmo() {
  local _secs=$1 _pid _n; shift
  "$@" & _pid=$!
  _n=$((_secs * 10))
  while kill -0 $_pid 2>/dev/null; do
    if [ $_n -le 0 ]; then
      kill -9 $_pid 2>/dev/null; echo "TIMEOUT after ${_secs}s: $*"
      dmesg | tail -15 | sed 's/^/  dmesg: /'; return 124
    fi
    usleep 100000; _n=$((_n - 1))
  done
  wait $_pid
}
# waitfor DECISECONDS cmd...: poll until cmd succeeds
waitfor() { local _n=$1; shift; while ! "$@"; do [ $_n -le 0 ] && return 1; usleep 100000; _n=$((_n - 1)); done; }
