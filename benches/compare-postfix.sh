#!/usr/bin/env bash
# certrelayd against Debian's Postfix as the same client-certificate relay, on one machine in
# one run. Both take mail on 127.0.0.1 with STARTTLS, relay for the load tool's certificate
# (MD5 fingerprint in relay_clientcerts) and forward to one counting sink on 127.0.0.1.
# Each load (benches/load.rs) waits until the sink holds every accepted message, so msgs/s is
# end to end. Memory: the peak over 100 ms samples of Rss and Pss summed over the server's
# process tree (Postfix: master and all its children; certrelayd: its one process).
#
# Usage (as root, from anywhere; Postfix must be installed but need not run):
#   benches/compare-postfix.sh
# KEEP=1 keeps the work directory (logs, configs) for a look afterwards.
# TARGET=x86_64-unknown-linux-musl measures a static musl build of certrelayd (see
# benches/footprint.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/build.sh

W=$(mktemp -d /tmp/certrelay-compare.XXXXXX)
chmod 755 "$W" # Postfix's unprivileged processes must reach their queue below it.
PIDS=()
PD=$W/postfix
cleanup() {
    set +e
    [ -f "$W/pf-spool/pid/master.pid" ] && postfix -c "$PD" stop >/dev/null 2>&1
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
SINK=$(free_port)
PF_PORT=$(free_port)
CR_PORT=$(free_port)

wait_for() { # what, seconds, command...
    local what=$1 secs=$2
    shift 2
    for _ in $(seq $((secs * 10))); do "$@" && return 0; sleep 0.1; done
    echo "timed out waiting for $what" >&2
    return 1
}

# --- PKI: a CA, the relay's certificate, the laptop's certificate and its MD5 line.
mkdir "$W/pki"
P=$W/pki
"$RELAY" -c "$P" ca init --hostname relay.test --name 127.0.0.1 >"$P/init.out"
"$RELAY" -c "$P" ca issue --out "$P" --map "$P/issued_map" laptop >"$P/issue.out"
"$RELAY" fingerprint --digest md5 --map-line laptop "$P/laptop.pem" >"$P/relay_clientcerts"

# --- The counting sink.
"$LOAD" --sink "$SINK" --count-file "$W/sink.count" 2>"$W/sink.log" &
PIDS+=($!)
wait_for "the sink" 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SINK" 2>/dev/null

# --- The relay settings both servers share.
COMMON=(
    "myhostname = relay.test"
    "mydestination = relay.test"
    "mynetworks = 192.0.2.0/24"
    "relayhost = [127.0.0.1]:$SINK"
    "smtpd_tls_security_level = may"
    "smtpd_tls_cert_file = $P/relay.pem"
    "smtpd_tls_key_file = $P/relay.key"
    "smtpd_tls_CAfile = $P/ca.pem"
    "smtpd_tls_ask_ccert = yes"
    "smtpd_tls_fingerprint_digest = md5"
    "relay_clientcerts = texthash:$P/relay_clientcerts"
    "smtpd_relay_restrictions ="
    "smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination"
    "smtp_tls_security_level = none"
)

# --- Postfix, from a copy of /etc/postfix.
cp -a /etc/postfix "$PD"
mkdir "$W/pf-spool"
postconf -c "$PD" -e "${COMMON[@]}" \
    "inet_interfaces = 127.0.0.1" "inet_protocols = ipv4" \
    "queue_directory = $W/pf-spool" "data_directory = $W/pf-data" \
    "myorigin = relay.test" "alias_maps =" "alias_database =" \
    "smtpd_tls_session_cache_database = btree:$W/pf-data/smtpd_scache" \
    "smtpd_tls_loglevel = 0"
postconf -c "$PD" -M# smtp/inet
postconf -c "$PD" -Me "127.0.0.1:$PF_PORT/inet = 127.0.0.1:$PF_PORT inet n - n - - smtpd"
postconf -c "$PD" -F '*/*/chroot = n'
# postfix(1) reports problems only on a terminal or to syslog: give it a terminal.
script -qc "postfix -c $PD start" /dev/null >"$W/postfix-start.out" 2>&1 || {
    cat "$W/postfix-start.out" >&2
    exit 1
}
wait_for "Postfix" 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PF_PORT" 2>/dev/null
PF_PID=$(tr -d ' ' <"$W/pf-spool/pid/master.pid")

# --- certrelayd, the same settings in its own directory.
C=$W/certrelay
mkdir "$C"
{
    printf '%s\n' "${COMMON[@]}"
    echo "queue_directory = $C/spool"
    echo "mail_owner = nobody" # started as root, it drops to nobody as Postfix drops to postfix
} >"$C/main.cf"
echo "127.0.0.1:$CR_PORT inet n - n - - smtpd" >"$C/master.cf"
"$RELAY" -c "$C" check >"$W/certrelayd-check.out" 2>&1 || {
    cat "$W/certrelayd-check.out" >&2
    exit 1
}
"$RELAY" -c "$C" >"$W/certrelayd.log" 2>&1 &
CR_PID=$!
PIDS+=("$CR_PID")
wait_for "certrelayd" 20 grep -q "daemon started" "$W/certrelayd.log"

# --- The loads.
run() { # server port pid label load-args...
    local server=$1 port=$2 pid=$3 label=$4
    shift 4
    "$LOAD" --mem-root "$pid" --mem-out "$W/mem" &
    local sampler=$!
    sleep 0.2
    local out
    out=$("$LOAD" --target "127.0.0.1:$port" --cert "$P/laptop.pem" --key "$P/laptop.pem" \
        --ca "$P/ca.pem" --servername relay.test --drain-sink "$SINK" "$@") || true
    sleep 0.2
    kill "$sampler"
    wait "$sampler" 2>/dev/null || true
    echo "$out" | grep -v '^RESULT' | sed "s/^/[$server $label] /" >&2
    echo "$server $label $(echo "$out" | sed -n 's/^RESULT //p') $(cat "$W/mem")" >>"$W/results"
}

SCENARIOS=(
    "C1-M200 -C 1 -M 200"
    "C8-M100 -C 8 -M 100"
    "noreuse-C4-M50 -C 4 -M 50 --no-reuse"
)
# Warm both up (a first connection starts Postfix's smtpd, tlsmgr, anvil...); not counted.
for s in postfix:$PF_PORT:$PF_PID certrelayd:$CR_PORT:$CR_PID; do
    IFS=: read -r name port pid <<<"$s"
    "$LOAD" --target "127.0.0.1:$port" --cert "$P/laptop.pem" --key "$P/laptop.pem" \
        --ca "$P/ca.pem" --drain-sink "$SINK" -C 2 -M 5 -S 1024 >/dev/null
done
: >"$W/results"
for size in 1024 102400; do
    for sc in "${SCENARIOS[@]}"; do
        read -r label args <<<"$sc"
        # shellcheck disable=SC2086
        run postfix "$PF_PORT" "$PF_PID" "$label-S$size" $args -S "$size"
        # shellcheck disable=SC2086
        run certrelayd "$CR_PORT" "$CR_PID" "$label-S$size" $args -S "$size"
    done
done

# --- The table.
echo
echo "certrelayd vs Postfix $(postconf -h mail_version) as a client-certificate relay; $(nproc) cores,"
echo "loopback, load tool on the same machine; end to end = until the sink holds every message."
echo "p99: per message, MAIL to the reply after the dot; hs p50: connect to the EHLO reply in TLS;"
echo "ehlo1: that EHLO alone. Peaks of 100 ms samples. 2 shared cores: numbers are noisy."
awk '
function v(k,   i) { for (i = 3; i <= NF; i++) if (index($i, k "=") == 1) return substr($i, length(k) + 2); return "" }
{
    key = $2; srv = $1
    e2e[srv, key] = v("e2e_msgs_per_s"); p99[srv, key] = v("p99_ms"); hs[srv, key] = v("hs_per_s"); hsp[srv, key] = v("hs_p50_ms"); et[srv, key] = v("ehlo_tls_p50_ms")
    rss[srv, key] = v("peak_rss_kib") / 1024; pss[srv, key] = v("peak_pss_kib") / 1024
    err[srv, key] = v("errors"); procs[srv, key] = v("max_procs")
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
}
END {
    printf "%-22s %-10s %9s %9s %9s %9s %9s %5s %4s %9s %9s\n", "load", "server", "e2e msg/s", "p99 ms", "hs/s", "RSS MiB", "PSS MiB", "procs", "err", "hs p50ms", "ehlo1 ms"
    for (i = 1; i <= n; i++) {
        k = order[i]
        split("postfix certrelayd", ss, " ")
        for (j = 1; j <= 2; j++) {
            s = ss[j]
            printf "%-22s %-10s %9.1f %9.2f %9.1f %9.1f %9.1f %5d %4d %9.2f %9.2f\n", k, s, e2e[s, k], p99[s, k], hs[s, k], rss[s, k], pss[s, k], procs[s, k], err[s, k], hsp[s, k], et[s, k]
        }
        printf "%-22s %-10s %8.2fx %8.2fx %8.2fx %8.3fx %8.3fx\n", k, "ratio", e2e["certrelayd", k] / e2e["postfix", k], p99["certrelayd", k] / p99["postfix", k], hs["certrelayd", k] / hs["postfix", k], rss["certrelayd", k] / rss["postfix", k], pss["certrelayd", k] / pss["postfix", k]
    }
    print ""
    print "targets (ratio = certrelayd / Postfix):"
    for (i = 1; i <= n; i++) {
        k = order[i]; r = e2e["certrelayd", k] / e2e["postfix", k]
        if (k ~ /^C8-/) printf "  e2e msgs/s >= 3x at C=8 (%s): %.2fx %s\n", k, r, (r >= 3 ? "met" : "MISSED")
    }
    for (i = 1; i <= n; i++) {
        k = order[i]; r = hs["certrelayd", k] / hs["postfix", k]
        if (k ~ /^noreuse/) printf "  handshakes/s >= 3x (%s): %.2fx %s\n", k, r, (r >= 3 ? "met" : "MISSED")
    }
    mp = 0; mc = 0
    for (i = 1; i <= n; i++) { k = order[i]; if (pss["postfix", k] > mp) mp = pss["postfix", k]; if (pss["certrelayd", k] > mc) mc = pss["certrelayd", k] }
    printf "  peak PSS <= 1/10 (over all loads): %.1f MiB vs %.1f MiB = %.3fx %s\n", mc, mp, mc / mp, (mc / mp <= 0.1 ? "met" : "MISSED")
    worse = ""
    for (i = 1; i <= n; i++) { k = order[i]; if (p99["certrelayd", k] + 0 > p99["postfix", k] + 0) worse = worse " " k }
    printf "  p99 no worse than Postfix: %s\n", (worse == "" ? "met in every load" : "MISSED in" worse)
}' "$W/results"
