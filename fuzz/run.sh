#!/usr/bin/env bash
# Runs berth's fuzz targets (cargo-fuzz / libFuzzer); see fuzz/README.md.
#
#   fuzz/run.sh [SECONDS] [TARGET...]   fuzz each target for SECONDS (default 60)
#   fuzz/run.sh --smoke [TARGET...]     run each target once over its checked-in
#                                       corpus only (-runs=0): what CI does
#
# Timed runs read the seeds in fuzz/corpus/<target>/ and write what they find
# to fuzz/work/<target>/ (ignored by git), so the checked-in corpus stays as
# it is. Crashes land in fuzz/artifacts/<target>/. Logs: fuzz/target/logs/.
# Prints, per target, the executions and whether it crashed; exits 1 if any
# target crashed or failed to run, 2 on a usage or tool problem.
#
# Toolchain: `cargo +nightly` when rustup has a nightly, else the default
# toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags). cargo-fuzz
# is installed from crates.io if missing.
set -uo pipefail

ALL_TARGETS=(machine_file kernel_image bus_devices)

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

smoke=0
seconds=60
targets=()
for arg in "$@"; do
    case "$arg" in
        --smoke) smoke=1 ;;
        -h | --help) usage ;;
        '' | *[!0-9]*)
            if [[ " ${ALL_TARGETS[*]} " == *" $arg "* ]]; then
                targets+=("$arg")
            else
                echo "run.sh: unknown target or option '$arg' (targets: ${ALL_TARGETS[*]})" >&2
                exit 2
            fi
            ;;
        *) seconds="$arg" ;;
    esac
done
[[ ${#targets[@]} -eq 0 ]] && targets=("${ALL_TARGETS[@]}")
if [[ $smoke -eq 0 && $seconds -lt 1 ]]; then
    echo "run.sh: SECONDS must be at least 1" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir/.." || exit 2 # cargo fuzz finds fuzz/ from the crate root

# Toolchain.
if rustup run nightly rustc --version >/dev/null 2>&1; then
    cargo=(cargo +nightly)
else
    echo "run.sh: no nightly toolchain; using the default one with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    cargo=(cargo)
fi
if ! "${cargo[@]}" fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || {
        echo "run.sh: cannot install cargo-fuzz" >&2
        exit 2
    }
fi

log_dir="$fuzz_dir/target/logs"
mkdir -p "$log_dir"

echo "== building fuzz targets"
if ! "${cargo[@]}" fuzz build >"$log_dir/build.log" 2>&1; then
    tail -40 "$log_dir/build.log" >&2
    echo "run.sh: build failed (full log: $log_dir/build.log)" >&2
    exit 1
fi

failed=0
summary=()
for t in "${targets[@]}"; do
    corpus="$fuzz_dir/corpus/$t"
    artifacts="$fuzz_dir/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    before="$(ls -1 "$artifacts" 2>/dev/null | sort)"
    dict=()
    [[ -f "$fuzz_dir/dicts/$t.dict" ]] && dict=("-dict=$fuzz_dir/dicts/$t.dict")
    if [[ $smoke -eq 1 ]]; then
        mode="smoke"
        dirs=("$corpus")
        flags=(-runs=0)
    else
        mode="${seconds}s"
        mkdir -p "$fuzz_dir/work/$t"
        dirs=("$fuzz_dir/work/$t" "$corpus")
        flags=("-max_total_time=$seconds" -timeout=30 "${dict[@]}")
    fi
    log="$log_dir/$t.log"
    echo "== $t ($mode)"
    "${cargo[@]}" fuzz run "$t" "${dirs[@]}" -- -print_final_stats=1 "${flags[@]}" >"$log" 2>&1
    status=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    [[ -z "$execs" ]] && execs="$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1)"
    after="$(ls -1 "$artifacts" 2>/dev/null | sort)"
    new="$(comm -13 <(echo "$before") <(echo "$after") | grep -v '^$' | tr '\n' ' ')"
    if [[ $status -eq 0 && -z "$new" ]]; then
        verdict="no crash"
    else
        failed=1
        if [[ -n "$new" ]]; then
            verdict="CRASHED: fuzz/artifacts/$t/ $new"
        else
            verdict="FAILED (exit $status)"
        fi
        grep -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)|SUMMARY' "$log" | head -5 >&2
        echo "   log: $log" >&2
    fi
    line="$(printf '%-13s %-6s executions: %-10s %s' "$t" "$mode" "${execs:-?}" "$verdict")"
    echo "$line"
    summary+=("$line")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
