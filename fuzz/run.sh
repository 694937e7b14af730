#!/usr/bin/env bash
# Builds every fuzz target once, then runs each (or those named) for SECONDS.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Works from any
# directory. Each target runs with libFuzzer's -max_total_time=SECONDS on the corpus
# fuzz/corpus/TARGET (what the runs found; not committed), also reading the committed
# seeds in fuzz/seeds/TARGET. JOBS targets run at once (default: the number of CPUs).
# Crash inputs go to fuzz/artifacts/TARGET/, the libFuzzer output to fuzz/logs/TARGET.log.
#
# Prints one line per target: seconds, executions, executions per second, corpus size
# (libFuzzer's in-memory corpus at the end), crashes and their files. Exits 1 when any
# target crashed or failed to run, 2 on a usage or build error.
#
# Environment: JOBS (targets at once), SANITIZER (address by default, as cargo-fuzz; the
# build falls back to none when AddressSanitizer cannot be built here), ASAN_OPTIONS (see
# below), FUZZ_ARGS (extra libFuzzer arguments for every target).
set -uo pipefail

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="$PATH:$HOME/.cargo/bin"

usage() {
    echo "usage: fuzz/run.sh SECONDS [TARGET...]" >&2
    echo "targets: $(targets | tr '\n' ' ')" >&2
    exit 2
}

targets() {
    sed -n 's/^name = "\(.*\)"$/\1/p' "$fuzz_dir/Cargo.toml" | grep -vx certrelay-fuzz
}

[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
seconds=$1
shift
all=$(targets)
if [[ $# -gt 0 ]]; then
    chosen=("$@")
    for t in "${chosen[@]}"; do
        grep -qx -- "$t" <<<"$all" || { echo "fuzz/run.sh: no target $t" >&2; usage; }
    done
else
    mapfile -t chosen <<<"$all"
fi
jobs=${JOBS:-$(nproc)}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "fuzz/run.sh: JOBS must be a positive number" >&2; exit 2; }

# One build of all targets: optimized, with debug assertions and overflow checks.
sanitizer=${SANITIZER:-address}
cd "$fuzz_dir" || exit 2
build() { cargo +nightly fuzz build --sanitizer "$1" >&2; }
if ! build "$sanitizer"; then
    if [[ $sanitizer == address && -z ${SANITIZER:-} ]]; then
        echo "fuzz/run.sh: the AddressSanitizer build failed; building without a sanitizer" >&2
        sanitizer=none
        build none || exit 2
    else
        exit 2
    fi
fi
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir=$fuzz_dir/target/$triple/release

# AddressSanitizer without what costs most and serves unsafe code the core does not have:
# fake stacks for use-after-return, and allocation stack traces in reports (a quarter of the
# time of the command-line target). Set ASAN_OPTIONS to choose otherwise.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0:detect_stack_use_after_return=0:malloc_context_size=0}

# Extra libFuzzer arguments per target: DATA wants inputs past one 8 KiB body chunk.
target_args() {
    case $1 in
        data_receiver) echo "-max_len=8400" ;;
        *) ;;
    esac
}

run_one() {
    local t=$1
    local corpus=$fuzz_dir/corpus/$t seeds=$fuzz_dir/seeds/$t artifacts=$fuzz_dir/artifacts/$t
    local log=$fuzz_dir/logs/$t.log
    mkdir -p "$corpus" "$artifacts" "$fuzz_dir/logs"
    local dirs=("$corpus")
    [[ -d $seeds ]] && dirs+=("$seeds")
    local before start rc
    before=$(find "$artifacts" -type f | sort)
    start=$(date +%s)
    # shellcheck disable=SC2046 # word splitting of the per-target arguments is meant
    "$bin_dir/$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=30 \
        -artifact_prefix="$artifacts/" $(target_args "$t") ${FUZZ_ARGS:-} "${dirs[@]}" \
        >"$log" 2>&1
    rc=$?
    local took=$(($(date +%s) - start))
    local execs corpus_size new
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corpus_size=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | grep -v '^$')
    local crashes=0
    [[ -n $new ]] && crashes=$(wc -l <<<"$new")
    [[ $rc -ne 0 && $crashes -eq 0 ]] && crashes=1 && new="(exit status $rc; see $log)"
    local rate=0
    [[ -n $execs && $took -gt 0 ]] && rate=$((execs / took))
    {
        printf '%-16s %5ss %12s execs %8s/s  corpus %6s  crashes %s' \
            "$t" "$took" "${execs:-?}" "$rate" "${corpus_size:-?}" "$crashes"
        [[ $crashes -gt 0 ]] && printf '  %s' "$(tr '\n' ' ' <<<"$new")"
        echo
    } >"$fuzz_dir/logs/$t.summary"
    [[ $crashes -eq 0 ]]
}

echo "fuzz/run.sh: ${#chosen[@]} target(s), ${seconds}s each, $jobs at once, sanitizer $sanitizer" >&2
for t in "${chosen[@]}"; do
    rm -f "$fuzz_dir/logs/$t.summary"
    while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do
        wait -n
    done
    echo "  started $t" >&2
    run_one "$t" &
done
wait

status=0
for t in "${chosen[@]}"; do
    if [[ -f $fuzz_dir/logs/$t.summary ]]; then
        cat "$fuzz_dir/logs/$t.summary"
        grep -q 'crashes 0$' "$fuzz_dir/logs/$t.summary" || status=1
    else
        echo "$t: no result (see $fuzz_dir/logs/$t.log)"
        status=1
    fi
done
exit $status
