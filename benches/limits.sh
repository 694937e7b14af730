#!/usr/bin/env bash
# This machine's ceilings for the work a relay does, each measured alone and printed with the
# command that produced it (benches/limits.rs): the spool's fsync sequence on the file system
# the benchmarks' spools live on (/tmp), full TLS handshakes with the relay's certificate type
# and server configuration, AES-GCM through rustls, loopback TCP. From them, the best
# end-to-end msgs/s at C=8 for 1 KiB and 100 KiB (the model is in benches/limits.rs, `model`).
#
# Then the relay itself (unless RELAY=0): certrelayd forwarding to the counting sink, loaded by
# benches/load.rs as compare-postfix.sh does (STARTTLS with a listed client certificate, one
# connection per client for M=100 messages, end to end = until the sink holds them all), with
# group commit and without it (CERTRELAY_BENCH_ONLY_NO_GROUP_COMMIT=1), RUNS times each,
# alternating; its msgs/s as a fraction of the ceiling; and, with STRACE=1, the fsyncs per
# message counted by strace over one load of each kind (counts, not rates: strace slows the
# relay).
#
# Usage (as root, from anywhere): benches/limits.sh
# SECS=3 per measurement, RUNS=3, KEEP=1 keeps the work directory.
# The machine is shared: rates move with whatever else runs; fsync counts do not.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-3}
RUNS=${RUNS:-3}
M=100

source benches/build.sh
LIMITS=$(cargo bench --no-run -p certrelay-suite --bench limits 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$LIMITS" ] || { echo "no limits program built" >&2; exit 1; }

W=$(mktemp -d /tmp/certrelay-limits.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
FIG=$W/figures
: >"$FIG"

# Prints the command as a person would type it, runs it, keeps its LIMIT lines.
measure() {
    echo "\$ ${ENVVAR:+$ENVVAR }cargo bench -p certrelay-suite --bench limits -- $*"
    env ${ENVVAR:-} "$LIMITS" "$@" | tee -a "$FIG" | sed -n '/^LIMIT /!s/^/    /p'
}

echo "== Ceilings, each alone ($(nproc) cores; $(df -T /tmp | awk 'NR==2 {print $2}') under /tmp)"
for size in 1024 102400; do
    measure fsync --dir "$W" --size "$size" -C 1 --secs "$SECS"
    measure fsync --dir "$W" --size "$size" -C 8 --secs "$SECS"
    measure spool --dir "$W" --size "$size" -C 8 --secs "$SECS"
    ENVVAR=CERTRELAY_BENCH_ONLY_NO_GROUP_COMMIT=1 measure spool --dir "$W" --size "$size" -C 8 --secs "$SECS"
done
measure handshake --secs "$SECS"
measure handshake --no-client-cert --secs "$SECS"
measure aead --size 102400 --secs "$SECS"
measure loopback --size 102400 --secs "$SECS"

echo
echo "== Best end-to-end msgs/s at C=8 (M=$M messages per connection)"
model_args=(cores="$(nproc)" msgs_per_conn=$M $(sed -n 's/^LIMIT //p' "$FIG"))
echo "\$ cargo bench -p certrelay-suite --bench limits -- model ${model_args[*]}"
"$LIMITS" model "${model_args[@]}" | tee -a "$FIG" | sed -n '/^LIMIT /!s/^/    /p'

[ "${RELAY:-1}" = 0 ] && exit 0

# ----------------------------------------------------------------------------------------
# The relay against the ceiling.

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_for() { # what, seconds, command...
    local what=$1 secs=$2
    shift 2
    for _ in $(seq $((secs * 10))); do "$@" && return 0; sleep 0.1; done
    echo "timed out waiting for $what" >&2
    return 1
}
SINK=$(free_port)
PORT=$(free_port)
P=$W/pki
mkdir "$P"
"$RELAY" -c "$P" ca init --hostname relay.test --name 127.0.0.1 >"$P/init.out"
"$RELAY" -c "$P" ca issue --out "$P" --map "$P/issued_map" laptop >"$P/issue.out"
"$RELAY" fingerprint --digest md5 --map-line laptop "$P/laptop.pem" >"$P/relay_clientcerts"
"$LOAD" --sink "$SINK" --count-file "$W/sink.count" 2>"$W/sink.log" &
PIDS+=($!)
wait_for "the sink" 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SINK" 2>/dev/null
C=$W/certrelay
mkdir "$C"
cat >"$C/main.cf" <<EOF
myhostname = relay.test
mydestination = relay.test
mynetworks = 192.0.2.0/24
relayhost = [127.0.0.1]:$SINK
smtpd_tls_security_level = may
smtpd_tls_cert_file = $P/relay.pem
smtpd_tls_key_file = $P/relay.key
smtpd_tls_CAfile = $P/ca.pem
smtpd_tls_ask_ccert = yes
smtpd_tls_fingerprint_digest = md5
relay_clientcerts = texthash:$P/relay_clientcerts
smtpd_relay_restrictions =
smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination
smtp_tls_security_level = none
queue_directory = $C/spool
mail_owner = nobody
EOF
echo "127.0.0.1:$PORT inet n - n - - smtpd" >"$C/master.cf"

RELAY_PID=
start_relay() { # grouped|ungrouped
    stop_relay
    : >"$W/relay.log"
    if [ "$1" = ungrouped ]; then
        CERTRELAY_BENCH_ONLY_NO_GROUP_COMMIT=1 "$RELAY" -c "$C" >"$W/relay.log" 2>&1 &
    else
        "$RELAY" -c "$C" >"$W/relay.log" 2>&1 &
    fi
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
    wait_for certrelayd 20 grep -q "daemon started" "$W/relay.log"
    # Warm up: sessions, caches, the sink connection.
    "$LOAD" --target "127.0.0.1:$PORT" --cert "$P/laptop.pem" --key "$P/laptop.pem" \
        --ca "$P/ca.pem" --drain-sink "$SINK" -C 2 -M 5 -S 1024 >/dev/null
}
stop_relay() {
    if [ -n "$RELAY_PID" ]; then
        kill "$RELAY_PID" 2>/dev/null || true
        wait "$RELAY_PID" 2>/dev/null || true
        RELAY_PID=
    fi
}
load() { # conns size -> RESULT line
    "$LOAD" --target "127.0.0.1:$PORT" --cert "$P/laptop.pem" --key "$P/laptop.pem" \
        --ca "$P/ca.pem" --servername relay.test --drain-sink "$SINK" -C "$1" -M $M -S "$2" |
        sed -n 's/^RESULT //p'
}
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }

echo
echo "== certrelayd end to end, with and without group commit ($RUNS runs each, alternating)"
echo "\$ benches/load.rs: load --target RELAY -C N -M $M -S SIZE --drain-sink SINK (as compare-postfix.sh)"
: >"$W/relay-results"
for run in $(seq "$RUNS"); do
    for mode in grouped ungrouped; do
        start_relay "$mode"
        for load_kind in "8 1024" "8 102400" "32 1024"; do
            read -r conns size <<<"$load_kind"
            r=$(load "$conns" "$size")
            echo "$mode C$conns S$size $(echo "$r" | field e2e_msgs_per_s) $(echo "$r" | field errors)" >>"$W/relay-results"
        done
    done
done
stop_relay
ceiling() { sed -n "s/^LIMIT ceiling_c8_s$1=//p" "$FIG"; }
awk -v c1="$(ceiling 1024)" -v c100="$(ceiling 102400)" '
{ key = $2 " " $3; v[$1, key] = v[$1, key] " " $4; err[$1, key] += $5; keys[key] = 1; modes[$1] = 1 }
END {
    printf "    %-14s %-10s %-28s %s\n", "load", "commit", "e2e msgs/s (each run)", "of the C=8 ceiling"
    n = split("C8 S1024,C8 S102400,C32 S1024", order, ",")
    for (i = 1; i <= n; i++) for (m = 0; m < 2; m++) {
        mode = m ? "ungrouped" : "grouped"; k = order[i]
        split(v[mode, k], xs, " "); best = 0
        for (j in xs) if (xs[j] + 0 > best) best = xs[j] + 0
        c = (k == "C8 S1024") ? c1 : (k == "C8 S102400") ? c100 : 0
        frac = c ? sprintf("best %.0f%% of %d", 100 * best / c, c) : "-"
        printf "    %-14s %-10s %-28s %s%s\n", k, mode, v[mode, k], frac, err[mode, k] ? " (errors: " err[mode, k] ")" : ""
    }
}' "$W/relay-results"

[ "${STRACE:-0}" = 1 ] || exit 0
echo
echo "== fsyncs per message (strace -f -c -e trace=fsync,fdatasync -p RELAY during one load)"
for mode in grouped ungrouped; do
    for conns in 8 32; do
        start_relay "$mode"
        strace -f -c -e trace=fsync,fdatasync -o "$W/strace.$mode.$conns" -p "$RELAY_PID" &
        st=$!
        sleep 1
        load "$conns" 1024 >/dev/null
        sleep 0.5
        kill -INT "$st"
        wait "$st" 2>/dev/null || true
        calls=$(awk '$NF == "fsync" || $NF == "fdatasync" {s += $4} END {print s + 0}' "$W/strace.$mode.$conns")
        msgs=$((conns * M))
        echo "    $mode C=$conns S=1024: $calls fsync calls for $msgs messages: $(awk -v c="$calls" -v m="$msgs" 'BEGIN {printf "%.2f", c / m}') per message"
    done
done
stop_relay
