#!/usr/bin/env bash
# dist/test-cross.sh [TARGET...]: builds each target with dist/build.sh and runs its binaries
# the way a router would, under Debian's qemu-user invoked directly (qemu-aarch64,
# qemu-arm, qemu-mipsel; no binfmt registration needed, none is made). Default targets:
# aarch64-unknown-linux-musl and armv7-unknown-linux-musleabihf; x86_64-unknown-linux-musl
# runs natively.
#
# Per target:
#   1. `certrelayd demo` (the relay it starts goes through the same qemu);
#   2. an exchange between the cross-built programs: a certrelayd under qemu with a
#      configuration made by its own `ca init` / `ca issue`, a `certrelay` laptop under qemu
#      queueing one message (`sendmail -t`), which its detached delivery run takes through the relay
#      with its certificate, to a small SMTP sink (python3), which must receive it;
#   3. the relay's resident memory, idle after start and after the message (VmRSS of the
#      qemu process: the emulator's own memory included, so more than on the router).
# Each step is timed. Exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)

need_qemu() {
  if ! command -v "$1" >/dev/null; then
    echo "installing qemu-user for $1" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends qemu-user
  fi
}

# A minimal SMTP sink on a loopback port of the system's choosing (printed first); each
# message's text goes into a new file under the folder given.
write_sink() {
  cat >"$1" <<'EOF'
import os, socketserver, sys

folder = sys.argv[1]

class Session(socketserver.StreamRequestHandler):
    def handle(self):
        def say(text):
            self.wfile.write(text.encode() + b"\r\n")
        say("220 sink.test ESMTP")
        data = None
        while True:
            line = self.rfile.readline(10000)
            if not line:
                return
            if data is not None:
                if line == b".\r\n":
                    name = os.path.join(folder, "msg-%d-%d" % (os.getpid(), len(os.listdir(folder))))
                    with open(name + ".tmp", "wb") as f:
                        f.write(b"".join(data))
                    os.rename(name + ".tmp", name)
                    data = None
                    say("250 2.0.0 Ok: queued")
                else:
                    data.append(line)
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                say("250-sink.test")
                say("250 8BITMIME")
            elif verb == b"DATA":
                data = []
                say("354 End data with <CR><LF>.<CR><LF>")
            elif verb == b"QUIT":
                say("221 2.0.0 Bye")
                return
            else:
                say("250 2.0.0 Ok")

socketserver.ThreadingTCPServer.allow_reuse_address = True
server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Session)
print(server.server_address[1], flush=True)
server.serve_forever()
EOF
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

wait_for() { # FILE TEXT SECONDS
  local until=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    if [ $SECONDS -ge $until ]; then
      echo "FAIL: no \"$2\" in $1 within $3 s:" >&2
      cat "$1" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

summary=()
work=$(mktemp -d)
relay_pid=
sink_pid=
cleanup() {
  [ -z "$relay_pid" ] || kill "$relay_pid" 2>/dev/null || true
  [ -z "$sink_pid" ] || kill "$sink_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
write_sink "$work/sink.py"

for target in "${targets[@]}"; do
  case "$target" in
    aarch64-*) emu=qemu-aarch64 ;;
    armv7-* | arm-*) emu=qemu-arm ;;
    mipsel-*) emu=qemu-mipsel ;;
    x86_64-*) emu= ;;
    *) echo "dist/test-cross.sh: no emulator known for $target" >&2; exit 2 ;;
  esac
  [ -z "$emu" ] || need_qemu "$emu"
  echo "== $target: build" >&2
  t=$(now)
  bin=$(dist/build.sh "$target" | tail -n 1)
  build_s=$(since "$t")
  run() { ${emu:+"$emu"} "$@"; } # the emulator, directly; natively for x86_64

  echo "== $target: certrelayd demo${emu:+ under $emu}" >&2
  t=$(now)
  run "$bin/certrelayd" demo >"$work/demo.out" 2>&1 || {
    cat "$work/demo.out" >&2
    echo "FAIL: $target: certrelayd demo" >&2
    exit 1
  }
  grep -q '^== done: the listed laptop relayed' "$work/demo.out"
  demo_s=$(since "$t")

  echo "== $target: relay + laptop exchange" >&2
  t=$(now)
  d="$work/$target"
  mkdir -p "$d/relay" "$d/alice" "$d/sink"
  python3 "$work/sink.py" "$d/sink" >"$d/sink.port" &
  sink_pid=$!
  wait_for "$d/sink.port" '[0-9]' 10
  sink_port=$(head -n 1 "$d/sink.port")
  relay_port=$(free_port)
  run "$bin/certrelayd" -c "$d/relay" ca init --hostname relay.test --name 127.0.0.1 \
    | grep '^smtpd_tls_' >"$d/tls.cf"
  : >"$d/relay/relay_clientcerts"
  cat >"$d/relay/main.cf" <<EOF
myhostname = relay.test
# Started as root, the relay becomes this account once its sockets are bound.
mail_owner = nobody
mydestination = relay.test
mynetworks = 127.0.0.2/32
queue_directory = $d/relay/spool
relayhost = [127.0.0.1]:$sink_port
smtpd_use_tls = yes
$(cat "$d/tls.cf")
smtpd_tls_ask_ccert = yes
relay_clientcerts = hash:$d/relay/relay_clientcerts
smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination
EOF
  echo "127.0.0.1:$relay_port inet n - n - - smtpd" >"$d/relay/master.cf"
  run "$bin/certrelayd" -c "$d/relay" ca issue --out "$d/alice" alice >/dev/null
  grep -q ' alice$' "$d/relay/relay_clientcerts"
  run "$bin/certrelayd" -c "$d/relay" check >/dev/null
  cat >"$d/alice/main.cf" <<EOF
myhostname = alice.laptop.test
queue_directory = $d/alice/queue
relayhost = [127.0.0.1]:$relay_port
smtp_tls_cert_file = $d/alice/alice.pem
smtp_tls_CAfile = $d/alice/alice-ca.pem
smtp_tls_security_level = encrypt
EOF

  ${emu:+"$emu"} "$bin/certrelayd" -c "$d/relay" run 2>"$d/relay.log" &
  relay_pid=$!
  wait_for "$d/relay.log" 'daemon started' 30
  sleep 2
  rss_idle=$(rss_kib "$relay_pid")

  token="cross-$target-$$"
  printf 'From: alice@laptop.test\nTo: friend@elsewhere.test\nSubject: %s\n\nSent by the %s build.\n' \
    "$token" "$target" | run "$bin/certrelay" -c "$d/alice" sendmail -t \
    2>"$d/sendmail.err"
  # No flush: sendmail's own detached delivery run starts this foreign binary again,
  # through the same emulator (certrelay_shell::reexec), and delivers.
  until grep -qs "Subject: $token" "$d"/sink/msg-*; do
    if ! kill -0 "$relay_pid" 2>/dev/null || [ "$(since "$t" | cut -d. -f1)" -gt 60 ]; then
      cat "$d/relay.log" >&2
      echo "FAIL: $target: the sink never received the laptop's message" >&2
      exit 1
    fi
    sleep 0.2
  done
  grep -q 'status=sent' "$d/relay.log" || wait_for "$d/relay.log" 'status=sent' 10
  sleep 1
  rss_after=$(rss_kib "$relay_pid")
  kill -TERM "$relay_pid"
  wait "$relay_pid" || true
  relay_pid=
  kill "$sink_pid"
  wait "$sink_pid" 2>/dev/null || true
  sink_pid=
  exchange_s=$(since "$t")

  size() { stat -c %s "$bin/$1"; }
  line="$target: build ${build_s}s, demo ${demo_s}s, exchange ${exchange_s}s;"
  line+=" certrelayd $(size certrelayd) B, certrelay $(size certrelay) B;"
  line+=" relay VmRSS idle ${rss_idle} KiB, after one message ${rss_after} KiB"
  line+="${emu:+ (under $emu, emulator included)}"
  echo "ok: $line" >&2
  summary+=("$line")
done

echo "== summary" >&2
printf '%s\n' "${summary[@]}"
