#!/usr/bin/env bash
# certrelayd's footprint: the stripped release binary, RSS after start, and RSS while it holds
# idle TLS sessions (opened by benches/load.rs --idle: STARTTLS with a client certificate,
# second EHLO, then nothing).
#
# Usage: benches/footprint.sh [SESSIONS]   (default 1000)
# KEEP=1 keeps the work directory. TARGET=x86_64-unknown-linux-musl measures a static musl
# build (rustup target add x86_64-unknown-linux-musl; ring's C code wants musl-gcc, from
# Debian's musl-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
HOLD=8

source benches/build.sh

W=$(mktemp -d /tmp/certrelay-footprint.XXXXXX)
chmod 755 "$W" # started as root, certrelayd runs as nobody and must reach its spool
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
P=$W/pki
mkdir "$P"
"$RELAY" -c "$P" ca init --hostname relay.test --name 127.0.0.1 >"$P/init.out"
"$RELAY" -c "$P" ca issue --out "$P" --map "$P/issued_map" laptop >"$P/issue.out"
"$RELAY" fingerprint --digest md5 --map-line laptop "$P/laptop.pem" >"$P/relay_clientcerts"

C=$W/certrelay
mkdir "$C"
# mynetworks holds 127.0.0.1, the per-client limit is off and the overall limit is above N,
# so every idle session is held.
cat >"$C/main.cf" <<EOF
myhostname = relay.test
mail_owner = nobody
mydestination = relay.test
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:9
defer_transports = smtp
queue_directory = $C/spool
smtpd_client_connection_count_limit = 0
default_process_limit = $((N + 100))
smtpd_tls_security_level = may
smtpd_tls_cert_file = $P/relay.pem
smtpd_tls_key_file = $P/relay.key
smtpd_tls_CAfile = $P/ca.pem
smtpd_tls_ask_ccert = yes
smtpd_tls_fingerprint_digest = md5
relay_clientcerts = texthash:$P/relay_clientcerts
smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination
EOF
echo "127.0.0.1:$PORT inet n - n - - smtpd" >"$C/master.cf"
"$RELAY" -c "$C" check >"$W/check.out" 2>&1 || { cat "$W/check.out" >&2; exit 1; }

mem() { # pid -> "RSS_KiB PSS_KiB"
    awk '/^Rss:/ {r = $2} /^Pss:/ {p = $2} END {print r, p}' "/proc/$1/smaps_rollup"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.2f", k / 1024}'; }

"$RELAY" -c "$C" >"$W/certrelayd.log" 2>&1 &
PID=$!
PIDS+=("$PID")
for _ in $(seq 100); do grep -q "daemon started" "$W/certrelayd.log" && break; sleep 0.1; done
grep -q "daemon started" "$W/certrelayd.log" || { cat "$W/certrelayd.log" >&2; exit 1; }
sleep 1
read -r IDLE_RSS IDLE_PSS <<<"$(mem "$PID")"
# Of the idle RSS: the process's own pages, and file pages (code, shared libraries).
read -r IDLE_ANON IDLE_FILE <<<"$(awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {print a, f}' "/proc/$PID/status")"

"$LOAD" --idle "$N" --hold "$HOLD" --target "127.0.0.1:$PORT" --cert "$P/laptop.pem" \
    --key "$P/laptop.pem" --ca "$P/ca.pem" >"$W/idle.out" 2>&1 &
IDLER=$!
PIDS+=("$IDLER")
for _ in $(seq 600); do grep -q "^IDLE open=" "$W/idle.out" && break; sleep 0.1; done
sleep 1
read -r HELD_RSS HELD_PSS <<<"$(mem "$PID")"
wait "$IDLER" || true
OPEN=$(sed -n 's/^IDLE open=\([0-9]*\).*/\1/p' "$W/idle.out")
FAILED=$(sed -n 's/^IDLE open=[0-9]* failed=\([0-9]*\).*/\1/p' "$W/idle.out")
ALIVE=$(sed -n 's/^IDLE alive_after_hold=\([0-9]*\).*/\1/p' "$W/idle.out")

SIZE=$(stat -c %s "$RELAY")
echo
echo "certrelayd footprint ($(uname -m), $(nproc) cores; $(file -b "$RELAY" | grep -o 'stripped\|not stripped'))"
printf "  release binary:            %d B = %s MiB\n" "$SIZE" "$(mib $((SIZE / 1024)))"
printf "  idle after start:          RSS %s MiB, PSS %s MiB\n" "$(mib "$IDLE_RSS")" "$(mib "$IDLE_PSS")"
printf "    of which anonymous %s MiB, file-backed %s MiB\n" "$(mib "$IDLE_ANON")" "$(mib "$IDLE_FILE")"
printf "  holding %s of %s TLS sessions: RSS %s MiB, PSS %s MiB (%s refused, %s still open after %s s)\n" \
    "$OPEN" "$N" "$(mib "$HELD_RSS")" "$(mib "$HELD_PSS")" "$FAILED" "$ALIVE" "$HOLD"
grep '^idle: error' "$W/idle.out" | sed 's/^/    /' || true
if [ "${OPEN:-0}" -gt 0 ]; then
    PER=$(awk -v a="$HELD_RSS" -v b="$IDLE_RSS" -v n="$OPEN" 'BEGIN {printf "%.1f", (a - b) / n}')
    EST=$(awk -v a="$HELD_RSS" -v b="$IDLE_RSS" -v n="$OPEN" -v m="$N" 'BEGIN {printf "%.2f", (b + (a - b) / n * m) / 1024}')
    echo "  per session:               $PER KiB RSS; at $N sessions that would be about $EST MiB"
fi
echo
echo "targets:"
awk -v s="$SIZE" -v i="$IDLE_RSS" -v h="$HELD_RSS" -v o="$OPEN" -v n="$N" 'BEGIN {
    printf "  stripped <= 4 MiB: %.2f MiB %s\n", s / 1048576, (s <= 4194304 ? "met" : "MISSED")
    printf "  idle RSS <= 3 MiB: %.2f MiB %s\n", i / 1024, (i <= 3072 ? "met" : "MISSED")
    if (o + 0 >= n + 0)
        printf "  %d idle TLS sessions <= 35 MiB: %.2f MiB %s\n", n, h / 1024, (h <= 35840 ? "met" : "MISSED")
    else
        printf "  %d idle TLS sessions <= 35 MiB: not measurable, only %d sessions accepted (product limit)\n", n, o
}'
