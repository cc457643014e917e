#!/bin/sh
# Start-up benchmark: boot a machine file N times and report wall time
# (min / median / max, ms) and peak RSS (KiB) of the whole berth process,
# from exec to exit. With QEMU installed (apt-get install qemu-system-x86)
# the same PVH probe is also timed under `qemu-system-x86_64 -M microvm`.
#   sh benches/startup.sh [N] [MACHINE.toml]
set -eu
n=${1:-30}
cfg=${2:-configs/default.toml}
berth=${BERTH:-target/release/berth}

stats() { # stats FILE-OF-NUMBERS -> "min median max"
	sort -n "$1" | awk '{ v[NR] = $1 } END { printf "%s %s %s", v[1], v[int((NR + 1) / 2)], v[NR] }'
}

run() { # run LABEL CMD... : N timed runs
	label=$1; shift
	t=$(mktemp); m=$(mktemp)
	i=0
	while [ "$i" -lt "$n" ]; do
		s=$(date +%s%N)
		/usr/bin/time -f %M -o "$m.one" "$@" >/dev/null 2>&1 || true
		e=$(date +%s%N)
		echo $(( (e - s) / 1000 )) | awk '{ printf "%.2f\n", $1 / 1000 }' >> "$t"
		tail -n 1 "$m.one" >> "$m"
		i=$((i + 1))
	done
	set -- $(stats "$t"); w="$1 / $2 / $3"
	set -- $(stats "$m"); r="$1 / $2 / $3"
	printf '%-28s wall ms (min/median/max) %-24s peak RSS KiB %s\n' "$label" "$w" "$r"
	rm -f "$t" "$m" "$m.one"
}

echo "runs: $n   host: $(uname -r)   pvm: $([ -e /sys/module/kvm_pvm ] && echo yes || echo no)"
run "berth $(basename "$cfg")" "$berth" run "$cfg"
if [ -e guests/probe-pvh.elf ] && command -v qemu-system-x86_64 >/dev/null 2>&1; then
	run "qemu microvm (probe-pvh)" qemu-system-x86_64 -M microvm -accel kvm -m 256M -smp 2 -nodefaults \
		-no-user-config -nographic -serial null -kernel guests/probe-pvh.elf \
		-device isa-debug-exit,iobase=0xf4,iosize=4
fi
