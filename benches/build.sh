# Sourced by benches/compare-postfix.sh and benches/footprint.sh, from the repository root:
# builds certrelayd (for $TARGET when set, e.g. x86_64-unknown-linux-musl) and the load tool,
# and sets RELAY and LOAD to their absolute paths.

if [[ "${TARGET:-}" == *musl* ]] && command -v musl-gcc >/dev/null; then
    # ring compiles C for the target: musl-gcc (Debian's musl-tools) unless CC_<target> says.
    CC_VAR="CC_${TARGET//-/_}"
    export "$CC_VAR=${!CC_VAR:-musl-gcc}"
fi
cargo build --release -p certrelayd ${TARGET:+--target "$TARGET"} >&2
RELAY=${CARGO_TARGET_DIR:-$PWD/target}/${TARGET:+$TARGET/}release/certrelayd
LOAD=$(cargo bench --no-run -p certrelay-suite --bench load 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$LOAD" ] && [ -x "$RELAY" ] || { echo "no load tool or certrelayd built" >&2; exit 1; }
case $LOAD in /*) ;; *) LOAD=$PWD/$LOAD ;; esac
