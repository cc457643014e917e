#!/bin/sh
# QEMU wrapper for kvm-unit-tests' run_tests.sh on this repository's dev host
# (used as QEMU=… by `make kut QEMU=1`). On that host (PVM nested KVM) QEMU
# 7.2 aborts with `-cpu host` or `-cpu max` ("failed to set MSR 0x10a"):
# KVM refuses the IA32_ARCH_CAPABILITIES value QEMU derives. Dropping that
# one feature makes both models boot. Every other argument passes through
# unchanged, in order.
real=${KUT_REAL_QEMU:-qemu-system-x86_64}
cpu_next=0
for a in "$@"; do
	shift
	if [ "$cpu_next" = 1 ]; then
		case "$a" in
		host | host,* | max | max,*) a="$a,-arch-capabilities" ;;
		esac
		cpu_next=0
	fi
	[ "$a" = "-cpu" ] && cpu_next=1
	set -- "$@" "$a"
done
exec "$real" "$@"
