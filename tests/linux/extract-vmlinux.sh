#!/bin/sh
# extract-vmlinux.sh BZIMAGE [OUT]
#
# Extracts the uncompressed ELF vmlinux from a Linux bzImage (written to OUT,
# default stdout is refused: OUT defaults to ./vmlinux).
#
# 1. Exact method: the setup header's payload_offset/payload_length (boot
#    protocol >= 2.08) locate the compressed kernel; its first bytes name
#    the compression (gzip, xz, lzma, bzip2, lzo, lz4, zstd).
# 2. Fallback (like the kernel's scripts/extract-vmlinux): search the whole
#    image for every known compression magic and try to decompress from
#    each hit until the result is an ELF file.
#
# Needs: od, dd, grep (GNU, -P), and the matching decompressor (gzip, xz,
# lzma, bzip2, lzop, lz4, zstd). Exit 0 on success, 1 on failure.
set -eu

img=${1:?usage: extract-vmlinux.sh BZIMAGE [OUT]}
out=${2:-vmlinux}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

le() { # le OFFSET SIZE -> unsigned little-endian integer at OFFSET
	od -An -t "u$2" -j "$1" -N "$2" --endian=little "$img" | tr -d ' \n'
}

is_elf() {
	[ -s "$1" ] && [ "$(head -c 4 "$1" | od -An -t x1 | tr -d ' \n')" = "7f454c46" ]
}

# decompress NAME < input > output, tolerating trailing garbage.
decompress() {
	case $1 in
	gzip) gzip -dc 2>/dev/null ;;
	xz) xz -dc 2>/dev/null ;;
	lzma) lzma -dc 2>/dev/null ;;
	bzip2) bzip2 -dc 2>/dev/null ;;
	lzo) lzop -dc 2>/dev/null ;;
	lz4) lz4 -dc 2>/dev/null ;;
	zstd) zstd -dc 2>/dev/null ;;
	esac
}

tool_for() {
	case $1 in
	gzip) echo gzip ;; xz) echo xz ;; lzma) echo lzma ;; bzip2) echo bzip2 ;;
	lzo) echo lzop ;; lz4) echo lz4 ;; zstd) echo zstd ;;
	esac
}

# try NAME OFFSET [LENGTH]: decompress from OFFSET; succeed if ELF came out.
try() {
	tool=$(tool_for "$1")
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "extract-vmlinux: $1 data at offset $2 but '$tool' is not installed" >&2
		return 1
	fi
	if [ -n "${3:-}" ]; then
		tail -c +"$(($2 + 1))" "$img" | head -c "$3"
	else
		tail -c +"$(($2 + 1))" "$img"
	fi | decompress "$1" >"$tmp/vmlinux" || true
	if is_elf "$tmp/vmlinux"; then
		mv "$tmp/vmlinux" "$out"
		echo "extract-vmlinux: $1 payload at offset $2 -> $out" >&2
		return 0
	fi
	return 1
}

# Compression magics (hex) and names, as in scripts/extract-vmlinux.
magics='1f8b08:gzip fd377a585a00:xz 5d000000:lzma 425a68:bzip2 894c5a:lzo 02214c18:lz4 28b52ffd:zstd'

name_of() { # name_of HEXPREFIX
	for m in $magics; do
		case $1 in "${m%%:*}"*) echo "${m#*:}"; return 0 ;; esac
	done
	return 1
}

# 1. Setup header.
if [ "$(dd if="$img" bs=1 skip=514 count=4 2>/dev/null)" = "HdrS" ]; then
	version=$(le 518 2)
	if [ "$version" -ge 520 ]; then # 0x208
		sects=$(le 497 1)
		[ "$sects" -eq 0 ] && sects=4
		poff=$(le 584 4)
		plen=$(le 588 4)
		start=$(((sects + 1) * 512 + poff))
		head=$(tail -c +"$((start + 1))" "$img" | head -c 6 | od -An -t x1 | tr -d ' \n')
		if name=$(name_of "$head"); then
			try "$name" "$start" "$plen" && exit 0
		fi
	fi
fi

# 2. Scan for every magic.
for m in $magics; do
	hex=${m%%:*}
	name=${m#*:}
	pat=$(echo "$hex" | sed 's/../\\x&/g')
	for off in $(LC_ALL=C grep -obUaP "$pat" "$img" 2>/dev/null | cut -d: -f1); do
		try "$name" "$off" && exit 0
	done
done

echo "extract-vmlinux: no compressed ELF kernel found in $img" >&2
exit 1
