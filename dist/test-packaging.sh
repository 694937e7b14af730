#!/usr/bin/env bash
# dist/test-packaging.sh: checks the packaging on this (throwaway, Debian) machine, as root.
#   - the procd init script and the maintainer scripts parse (sh -n);
#   - dist/deb/build-deb.sh makes a .deb holding the programs, units and conffiles;
#   - it installs with dpkg -i (twice: postinst is idempotent), makes the certrelay
#     account and its 0700 spool; `ca init` + `check` pass with the shipped main.cf;
#   - systemd-analyze verify accepts both units (when systemd-analyze is there);
#   - the relay starts, binds a port below 1024 and drops to certrelay with exactly the
#     unit's capability bounding set and no_new_privs, and does not start without
#     CAP_DAC_READ_SEARCH (the spool is certrelay's, mode 0700);
#   - dpkg --purge removes the programs, the account and the spool.
# It refuses to run where a certrelay package, account or /etc/certrelay already exists.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (it installs the package)"
if dpkg-query -W certrelay >/dev/null 2>&1 || getent passwd certrelay >/dev/null \
  || [ -e /etc/certrelay ] || [ -e /var/spool/certrelay ]; then
  fail "certrelay is already installed or configured here; not touching it"
fi

sh -n dist/openwrt/files/certrelayd.init
sh -n dist/deb/postinst
sh -n dist/deb/postrm
echo "ok: sh -n on the init script and maintainer scripts"

deb=$(dist/deb/build-deb.sh | tail -n 1)
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/sbin/certrelayd ./usr/bin/certrelay ./lib/systemd/system/certrelayd.service \
  ./usr/lib/systemd/user/certrelay.service ./etc/certrelay/main.cf ./etc/certrelay/master.cf \
  ./etc/certrelay/relay_clientcerts; do
  grep -q " $path\$" <<<"$contents" || fail "$deb lacks $path"
done
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | wc -l)" = 3 ] \
  || fail "conffiles should list the three /etc/certrelay files"
echo "ok: $deb ($(stat -c %s "$deb") bytes) holds the programs, units and conffiles"

work=$(mktemp -d)
relay_pid=
cleanup() {
  [ -z "$relay_pid" ] || kill "$relay_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  dpkg --purge certrelay >/dev/null 2>&1 || true
  rm -rf /etc/certrelay "$work"
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
dpkg -i "$deb" >/dev/null # a second configure finds the account and spool made
getent passwd certrelay >/dev/null || fail "no certrelay account after dpkg -i"
[ "$(stat -c '%U:%G %a' /var/spool/certrelay)" = "certrelay:certrelay 700" ] \
  || fail "/var/spool/certrelay: $(stat -c '%U:%G %a' /var/spool/certrelay)"
echo "ok: dpkg -i (twice) installs and makes the certrelay account and its spool"

certrelayd -c /etc/certrelay ca init >/dev/null
certrelayd -c /etc/certrelay check >"$work/check.out" 2>&1 \
  || { cat "$work/check.out" >&2; fail "certrelayd check with the shipped main.cf"; }
echo "ok: ca init, then certrelayd -c /etc/certrelay check: $(tail -n 1 "$work/check.out")"

if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /lib/systemd/system/certrelayd.service
  # A user unit is verified as a system one would be: its settings are valid in both.
  systemd-analyze verify /usr/lib/systemd/user/certrelay.service
  echo "ok: systemd-analyze verify certrelayd.service certrelay.service"
else
  echo "skipped: systemd-analyze is not installed"
fi

# The relay as the unit starts it: root, only the unit's capabilities, no_new_privs.
port=$(python3 -c '
import socket
for p in range(600, 1000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass')
mkdir "$work/conf"
cp /etc/certrelay/main.cf /etc/certrelay/relay_clientcerts "$work/conf/"
sed -i "s|^relay_clientcerts = .*|relay_clientcerts = hash:$work/conf/relay_clientcerts|" \
  "$work/conf/main.cf"
echo "127.0.0.1:$port inet n - n - - smtpd" >"$work/conf/master.cf"
caps=$(sed -n 's/^CapabilityBoundingSet=//p' dist/systemd/certrelayd.service \
  | tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
start_relay() { # BOUNDING-SET LOG
  setpriv --bounding-set "-all,$1" --inh-caps -all --no-new-privs \
    /usr/sbin/certrelayd -c "$work/conf" run 2>"$2" &
  relay_pid=$!
}
start_relay "$caps" "$work/relay.log"
until grep -q 'daemon started' "$work/relay.log"; do
  kill -0 "$relay_pid" 2>/dev/null || { cat "$work/relay.log" >&2; fail "relay did not start with $caps"; }
  sleep 0.2
done
[ "$(awk '/^Uid:/ { print $2 }' "/proc/$relay_pid/status")" = "$(id -u certrelay)" ] \
  || fail "the relay does not run as certrelay"
grep -q "^CapEff:	0000000000000000" "/proc/$relay_pid/status" \
  || fail "the relay kept capabilities after the drop"
python3 -c "
import socket; s = socket.create_connection(('127.0.0.1', $port)); print(s.recv(100).decode().strip())" \
  | grep -q '^220 ' || fail "no greeting on port $port"
kill -TERM "$relay_pid"
wait "$relay_pid" || fail "the relay did not stop cleanly"
relay_pid=
echo "ok: the relay starts with the unit's bounding set ($caps), binds port $port, runs as certrelay without capabilities"

without=$(sed 's/,+dac_read_search//' <<<"$caps")
start_relay "$without" "$work/relay2.log"
wait "$relay_pid" && fail "the relay started without CAP_DAC_READ_SEARCH" || true
relay_pid=
grep -q 'not starting' "$work/relay2.log" || { cat "$work/relay2.log" >&2; fail "unexpected failure"; }
echo "ok: without CAP_DAC_READ_SEARCH it does not start: $(grep -m1 'not starting' "$work/relay2.log")"

dpkg --purge certrelay >/dev/null
[ ! -e /usr/sbin/certrelayd ] || fail "/usr/sbin/certrelayd left after purge"
getent passwd certrelay >/dev/null && fail "the certrelay account is left after purge"
[ ! -e /var/spool/certrelay ] || fail "/var/spool/certrelay left after purge"
echo "ok: dpkg --purge removes the programs, the account and the spool"
