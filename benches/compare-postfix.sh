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
# KEEP=1 keeps the work directory (logs, configs) for a look afterwards. TRIALS=N runs each
# load N times per server, alternating (default 3; TRIALS=1 is the single trial of runs before
# 2026-12-04's last session); the table shows medians and each trial's ratio.
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

# --- The loads. Each load runs TRIALS times (3 unless set), the two servers alternating
# (Postfix, certrelayd, Postfix, ...), and each server's figure is the median of its trials:
# on this project's shared 2-core machines one trial of the same binary varies by up to ±30 %,
# and a slow moment caught by one server's only trial decided a ratio on its own.
TRIALS=${TRIALS:-3}
run() { # server port pid label trial load-args...
    local server=$1 port=$2 pid=$3 label=$4 trial=$5
    shift 5
    "$LOAD" --mem-root "$pid" --mem-out "$W/mem" &
    local sampler=$!
    sleep 0.2
    local out
    out=$("$LOAD" --target "127.0.0.1:$port" --cert "$P/laptop.pem" --key "$P/laptop.pem" \
        --ca "$P/ca.pem" --servername relay.test --drain-sink "$SINK" "$@") || true
    sleep 0.2
    kill "$sampler"
    wait "$sampler" 2>/dev/null || true
    echo "$out" | grep -v '^RESULT' | sed "s/^/[$server $label #$trial] /" >&2
    echo "$server $label trial=$trial $(echo "$out" | sed -n 's/^RESULT //p') $(cat "$W/mem")" >>"$W/results"
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
        for trial in $(seq "$TRIALS"); do
            # shellcheck disable=SC2086
            run postfix "$PF_PORT" "$PF_PID" "$label-S$size" "$trial" $args -S "$size"
            # shellcheck disable=SC2086
            run certrelayd "$CR_PORT" "$CR_PID" "$label-S$size" "$trial" $args -S "$size"
        done
    done
done

# --- The table.
echo
echo "certrelayd vs Postfix $(postconf -h mail_version) as a client-certificate relay; $(nproc) cores,"
echo "loopback, load tool on the same machine; end to end = until the sink holds every message."
echo "p99: per message, MAIL to the reply after the dot; hs p50: connect to the EHLO reply in TLS;"
echo "ehlo1: that EHLO alone. Each figure is the median of $TRIALS trials, the servers alternating;"
echo "memory is the peak of 100 ms samples over all trials. 2 shared cores: numbers are noisy."
python3 - "$W/results" <<'PY'
import statistics, sys

rows = {}   # (server, load) -> list of {key: value}
order = []
for line in open(sys.argv[1]):
    f = line.split()
    server, load = f[0], f[1]
    kv = dict(x.split("=", 1) for x in f[2:] if "=" in x)
    if load not in order:
        order.append(load)
    rows.setdefault((server, load), []).append(kv)

def med(server, load, key):
    vals = [float(r.get(key) or 0) for r in rows.get((server, load), [])]
    return statistics.median(vals) if vals else 0.0

def peak(server, load, key):
    vals = [float(r.get(key) or 0) for r in rows.get((server, load), [])]
    return max(vals) if vals else 0.0

def ratio(a, b):
    return a / b if b else float("inf")

def trial_ratios(load, key):
    pf = [float(r.get(key) or 0) for r in rows.get(("postfix", load), [])]
    cr = [float(r.get(key) or 0) for r in rows.get(("certrelayd", load), [])]
    return " ".join("%.2f" % ratio(c, p) for c, p in zip(cr, pf))

print("%-22s %-10s %9s %9s %9s %9s %9s %5s %4s %9s %9s" % ("load", "server", "e2e msg/s", "p99 ms",
      "hs/s", "RSS MiB", "PSS MiB", "procs", "err", "hs p50ms", "ehlo1 ms"))
fig = {}
for load in order:
    for s in ("postfix", "certrelayd"):
        fig[s, load] = dict(
            e2e=med(s, load, "e2e_msgs_per_s"), p99=med(s, load, "p99_ms"),
            hs=med(s, load, "hs_per_s"), hsp=med(s, load, "hs_p50_ms"),
            et=med(s, load, "ehlo_tls_p50_ms"),
            rss=peak(s, load, "peak_rss_kib") / 1024, pss=peak(s, load, "peak_pss_kib") / 1024,
            procs=peak(s, load, "max_procs"),
            err=sum(float(r.get("errors") or 0) for r in rows.get((s, load), [])))
        f = fig[s, load]
        print("%-22s %-10s %9.1f %9.2f %9.1f %9.1f %9.1f %5d %4d %9.2f %9.2f" % (load, s, f["e2e"],
              f["p99"], f["hs"], f["rss"], f["pss"], f["procs"], f["err"], f["hsp"], f["et"]))
    p, c = fig["postfix", load], fig["certrelayd", load]
    print("%-22s %-10s %8.2fx %8.2fx %8.2fx %8.3fx %8.3fx   e2e per trial: %s" % (load, "ratio",
          ratio(c["e2e"], p["e2e"]), ratio(c["p99"], p["p99"]), ratio(c["hs"], p["hs"]),
          ratio(c["rss"], p["rss"]), ratio(c["pss"], p["pss"]),
          trial_ratios(load, "e2e_msgs_per_s")))

print()
print("targets (ratio = certrelayd / Postfix, of the medians):")
met = lambda ok: "met" if ok else "MISSED"
for load in order:
    if load.startswith("C8-"):
        r = ratio(fig["certrelayd", load]["e2e"], fig["postfix", load]["e2e"])
        print("  e2e msgs/s >= 3x at C=8 (%s): %.2fx %s" % (load, r, met(r >= 3)))
for load in order:
    if load.startswith("noreuse"):
        r = ratio(fig["certrelayd", load]["hs"], fig["postfix", load]["hs"])
        print("  handshakes/s >= 3x (%s): %.2fx %s" % (load, r, met(r >= 3)))
mp = max(fig["postfix", l]["pss"] for l in order)
mc = max(fig["certrelayd", l]["pss"] for l in order)
print("  peak PSS <= 1/10 (over all loads): %.1f MiB vs %.1f MiB = %.3fx %s"
      % (mc, mp, mc / mp, met(mc / mp <= 0.1)))
worse = [l for l in order if fig["certrelayd", l]["p99"] > fig["postfix", l]["p99"]]
print("  p99 no worse than Postfix: %s" % ("met in every load" if not worse
      else "MISSED in " + " ".join(worse)))
PY
