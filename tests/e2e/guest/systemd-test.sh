#!/bin/bash
# The systemd guest's test (run by systemd as e2e.service; systemd is PID 1): `usbipd server` with
# its defaults installs, enables and starts usbipd-extension.service by itself; a bind of the
# QEMU-emulated usb-storage disk goes through that systemd-managed extension; the guest's own
# vhci-hcd imports it over 127.0.0.1 and reads known bytes; `systemctl kill -s KILL` is undone by
# systemd within a second, the claim is restored and the disk is imported and read again;
# `usbipd extension uninstall` leaves no unit behind. Prints "E2E CHECK name PASS|FAIL reason",
# "E2E TIME name ms" and "E2E DONE failed=N", then powers the guest off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
usleep() { sleep "$(printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)))"; }
FAILED=0
. /usr/local/lib/e2e-lib.sh
RAWMD5= RAW_BLK=0 STOID=46f4:0001 UNIT=usbipd-extension.service
for x in $(cat /proc/cmdline); do
  case $x in e2e_rawmd5=*) RAWMD5=${x#*=};; e2e_raw_blk=*) RAW_BLK=${x#*=};; esac
done
finish() {
  echo "=== usbipd server log (tail)"; tail -15 /tmp/server.log 2>/dev/null
  echo "=== journal of $UNIT"; journalctl -q -o short-monotonic -u $UNIT --no-pager | cut -c1-220
  echo "=== systemd's reloads"; journalctl -q -o short-monotonic _PID=1 --no-pager | grep -E "Reloading|Reloaded|reload" | tail
  echo "E2E DONE failed=$FAILED"
  systemctl poweroff -ff
}
ms_now() { echo $(($(date +%s%N) / 1000000)); }
# monotonic microseconds, the clock of systemd's *TimestampMonotonic properties
mono_us() { awk '{printf "%d\n", $1 * 1000000}' /proc/uptime; }
prop() { systemctl show -p "$1" --value $UNIT; }

find_dev() {
  local d
  for d in /sys/bus/usb/devices/*; do
    case ${d##*/} in *:*|usb*) continue;; esac
    [ "$(cat $d/idVendor 2>/dev/null):$(cat $d/idProduct 2>/dev/null)" = "$1" ] || continue
    case $(readlink -f $d) in
      */vhci_hcd*) [ "$2" = vhci ] && { echo $d; return 0; };;
      *) [ "$2" = local ] && { echo $d; return 0; };;
    esac
  done
  return 1
}
configured() { local d c; d=$(find_dev $1 $2) && c=$(cat $d/bConfigurationValue 2>/dev/null) && [ -n "$c" ] && [ "$c" != 0 ]; }
drv() { basename "$(readlink $1/driver 2>/dev/null)" 2>/dev/null; }
intf0() { echo $1/${1##*/}:1.0; }
disk_of() { ls $(intf0 $1)/host*/target*/*/block 2>/dev/null | head -1; }
has_disk() { [ -n "$(disk_of $1)" ] && [ -b /dev/$(disk_of $1) ]; }
ports() { usbip port 2>/dev/null | sed -n 's/^Port \([0-9]*\):.*/\1/p'; }
gone() { ! find_dev $1 vhci >/dev/null; }
detach_all() {
  local p ok=0
  for p in $(ports); do tmo 20 usbip detach -p $p >/dev/null || ok=1; done
  waitfor 100 gone $STOID && [ -z "$(ports)" ] && [ $ok = 0 ]
}
raw_md5() { tmo 30 dd if=/dev/$1 bs=65536 skip=$RAW_BLK count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }
# import NAME: usbip attach over loopback, wait for the imported disk, read the known bytes
import() {
  local out vd disk got
  if ! out=$(tmo 30 usbip attach -r 127.0.0.1 -b $SB 2>&1) || ! waitfor 150 configured $STOID vhci; then
    fail $1-attach "$(echo $out) $(dmesg | tail -5 | tr '\n' ' ')"; return 1
  fi
  vd=$(find_dev $STOID vhci); pass $1-attach "${vd##*/} speed=$(cat $vd/speed)"
  if ! waitfor 150 has_disk $vd; then fail $1-read "no block device (driver '$(drv $(intf0 $vd))')"; return 1; fi
  disk=$(disk_of $vd); got=$(raw_md5 $disk)
  check $1-read "/dev/$disk: 1 MiB at block $RAW_BLK md5 $got want $RAWMD5" [ "$got" = "$RAWMD5" ]
}
st_json() { tmo 20 usbipd status --json 2>/dev/null | tr -d ' \n'; }
ext_pid() { st_json | sed -n 's/.*"extension":{[^}]*"pid":\([0-9]*\)[^}]*"running":true.*/\1/p'; }
claim_state() { st_json | grep -o "\"busid\":\"$1\"[^}]*" | sed -n 's/.*"state":"\([^"]*\)".*/\1/p'; }
claim_is() { [ "$(claim_state $1)" = "$2" ]; }

t "test start (systemd $(systemctl --version | head -1 | cut -d' ' -f2), state $(systemctl is-system-running))"
check sd-pid1 "PID 1 is '$(cat /proc/1/comm)'" [ "$(cat /proc/1/comm)" = systemd ]
modprobe vhci-hcd || echo "modprobe vhci-hcd failed"
if waitfor 300 eval 'SD=$(find_dev $STOID local) && has_disk $SD'; then
  SB=${SD##*/} LOCAL_DISK=$(disk_of $SD)
  got=$(raw_md5 $LOCAL_DISK)
  check local-disk "$SB /dev/$LOCAL_DISK driver $(drv $(intf0 $SD)), md5 $got want $RAWMD5" [ "$got" = "$RAWMD5" ]
else
  fail local-disk "no emulated disk: $(ls /sys/bus/usb/devices | tr '\n' ' ')"; finish; exit 1
fi

# ---- `usbipd server` with its defaults installs the systemd unit and starts it -------------------
: > /tmp/usbipd.toml
t0=$(ms_now)
RUST_LOG=info usbipd server --listen 127.0.0.1:3240 --config /tmp/usbipd.toml > /tmp/server.log 2>&1 &
active() { tmo 20 usbipd status 2>/dev/null > /tmp/status.txt; grep -qx "System Extension: Active" /tmp/status.txt; }
if waitfor 300 active; then
  TIME=$(($(ms_now) - t0)); echo "E2E TIME server-to-active $TIME"
  check server-installs-unit "Active after $TIME ms; $(grep 'Service:' /tmp/status.txt)" \
    grep -q "Service: systemd unit $UNIT (/etc/systemd/system/$UNIT)" /tmp/status.txt
else
  fail server-installs-unit "$(cat /tmp/status.txt | head -5) $(tail -5 /tmp/server.log)"
fi
# the installation alone (write, enable, one daemon-reload, start until READY), from the daemon's log
logms() { date -d "$(grep -m1 "$1" /tmp/server.log | cut -d' ' -f1)" +%s%3N 2>/dev/null; }
a=$(logms "installing the extension") b=$(logms "extension installed")
[ -n "$a" ] && [ -n "$b" ] && echo "E2E TIME install $((b - a))"
check unit-enabled-active "enabled '$(systemctl is-enabled $UNIT)' active '$(systemctl is-active $UNIT)'" \
  eval '[ "$(systemctl is-enabled $UNIT)" = enabled ] && [ "$(systemctl is-active $UNIT)" = active ]'
MAINPID=$(prop MainPID)
check status-is-the-unit "usbipd status: extension pid '$(ext_pid)', systemd MainPID '$MAINPID'" \
  eval '[ -n "$MAINPID" ] && [ "$MAINPID" != 0 ] && [ "$(ext_pid)" = "$MAINPID" ]'
# (b): one start only, no start-stop-start of a freshly installed unit
starts() { journalctl -q -o cat -u $UNIT --no-pager | grep -c "extension ready"; }
waitfor 30 eval '[ "$(starts)" -ge 1 ]'
check unit-started-once "$(starts) start(s) of the extension, NRestarts $(prop NRestarts)" \
  eval '[ "$(starts)" = 1 ] && [ "$(prop NRestarts)" = 0 ]'
# (a): /run/usbipd is the unit's RuntimeDirectory: a mount of its own in the unit's sandbox, made
# writable there by systemd by design (ProtectSystem=strict), not by the luck of /run being writable
mnt() { awk -v p="$1" '$5 == p {print $6}' /proc/$MAINPID/mountinfo | tail -1; }
check runtime-directory "RuntimeDirectory '$(prop RuntimeDirectory)', /run/usbipd $(stat -c '%a %U' /run/usbipd), in the unit's sandbox: /run/usbipd '$(mnt /run/usbipd)' (/run '$(mnt /run)', / '$(mnt /)'), sockets: $(ls /run/usbipd | tr '\n' ' ')" \
  eval '[ "$(prop RuntimeDirectory)" = usbipd ] && [ "$(stat -c %a /run/usbipd)" = 755 ] &&
        mnt /run/usbipd | grep -q "^rw" && mnt / | grep -q "^ro" && [ -S /run/usbipd/extension.sock ]'

# ---- bind goes through the systemd-managed extension; the kernel's client imports and reads ------
o=$(tmo 30 usbipd bind --busid $SB 2>&1); rc=$?
check bind "rc=$rc $(echo $o)" eval '[ $rc = 0 ] && echo "$o" | grep -q "taken from kernel driver usb-storage"'
held() { ls -l /proc/$MAINPID/fd 2>/dev/null | grep -c "/dev/bus/usb/"; }
check bind-claimed-by-unit "claim '$(claim_state $SB)', local driver '$(drv $(intf0 $SD))', usbfs nodes open in MainPID $MAINPID: $(held)" \
  eval 'waitfor 50 claim_is $SB claimed && [ "$(drv $(intf0 $SD))" = usbfs ] && [ "$(held)" -ge 1 ]'
import import && check import-in-use "claim '$(claim_state $SB)'" claim_is $SB inuse
check detach "every port detached" detach_all

# ---- systemctl kill -s KILL: systemd starts it again, within a second, and the claim is back -------
waitfor 50 claim_is $SB claimed
OLD=$MAINPID
# no busy polling while systemd restarts it (TCG: every systemctl costs CPU the restart needs);
# the times come from systemd's own monotonic timestamps afterwards
systemctl kill -s KILL $UNIT
up() { p=$(prop MainPID); [ "$p" != 0 ] && [ "$p" != $OLD ] && [ "$(systemctl is-active $UNIT)" = active ]; }
n=0; while ! up && [ $n -lt 30 ]; do sleep 0.5; n=$((n + 1)); done
if up; then
  MAINPID=$(prop MainPID)
  # when systemd saw the old process die, from its journal line (seconds, monotonic)
  died=$(journalctl -q -o short-monotonic -u $UNIT --no-pager | grep "Main process exited, code=killed" | tail -1 |
         sed 's/^\[ *\([0-9.]*\)\].*/\1/' | awk '{printf "%d\n", $1 * 1000000}')
  first=$(journalctl -q -o short-monotonic _PID=$MAINPID --no-pager | head -1 | sed 's/^\[ *\([0-9.]*\)\].*/\1/' | awk '{printf "%d\n", $1 * 1000000}')
  FORK_MS=$((($(prop ExecMainStartTimestampMonotonic) - died) / 1000))
  FIRST_MS=$(((first - died) / 1000))
  READY_MS=$((($(prop ActiveEnterTimestampMonotonic) - died) / 1000))
  echo "E2E TIME death-to-fork $FORK_MS"; echo "E2E TIME death-to-first-log $FIRST_MS"; echo "E2E TIME death-to-ready $READY_MS"
  # systemd's part (RestartSec and its own work) must stay under a second; the new process's
  # start-up in this emulated CPU (sandbox set-up, exec, restoring the claim) comes on top
  check restart-under-1s "pid $OLD killed; new MainPID $MAINPID forked $FORK_MS ms after the death (RestartSec $(prop RestartUSec)), first log after $FIRST_MS ms, READY after $READY_MS ms (NRestarts $(prop NRestarts))" \
    eval '[ $FORK_MS -lt 1000 ] && [ "$(prop NRestarts)" = 1 ]'
else
  fail restart-under-1s "MainPID '$(prop MainPID)' state '$(systemctl is-active $UNIT)'"
fi
r=$(mono_us)
if waitfor 100 eval '[ "$(ext_pid)" = "$MAINPID" ] && claim_is $SB claimed'; then
  echo "E2E TIME ready-to-claim-visible $((($(mono_us) - r) / 1000))"
  pass restart-restores-claim "claim '$(claim_state $SB)' held by $MAINPID, local driver '$(drv $(intf0 $SD))', usbfs nodes open: $(held)"
else
  fail restart-restores-claim "status pid '$(ext_pid)' claim '$(claim_state $SB)' driver '$(drv $(intf0 $SD))'"
fi
import reimport
check detach-again "every port detached" detach_all

# ---- unbind, stop the daemon, uninstall: the device goes back, no unit is left ---------------------
o=$(tmo 30 usbipd unbind --busid $SB 2>&1); rc=$?
check unbind "rc=$rc $(echo $o), local driver '$(waitfor 100 eval '[ "$(drv $(intf0 $SD))" = usb-storage ]'; drv $(intf0 $SD))'" \
  eval '[ $rc = 0 ] && [ "$(drv $(intf0 $SD))" = usb-storage ]'
pkill -TERM -f "usbipd server"; waitfor 100 eval '! pgrep -f "usbipd server" >/dev/null'
o=$(tmo 60 usbipd extension uninstall 2>&1); rc=$?
left() { ls /etc/systemd/system | grep usbipd; systemctl list-unit-files --no-legend "usbipd*" | grep usbipd; systemctl list-units --all --no-legend "usbipd*" | grep -v "not-found" | grep usbipd; }
check uninstall-leaves-no-unit "rc=$rc $(echo $o); left: '$(left | tr '\n' ' ')', extension processes: $(pgrep -fc 'extension run')" \
  eval '[ $rc = 0 ] && [ -z "$(left)" ] && ! pgrep -f "extension run" >/dev/null'
finish
