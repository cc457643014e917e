#!/bin/sh
# Fetches what the Linux smoke test boots, from Debian's archive, into a cache
# outside the repository (BERTH_LINUX_CACHE, default ~/.cache/berth/linux),
# and links it under target/linux/ where configs/linux-*.toml point:
#   target/linux/vmlinuz            Debian's linux-image-cloud-amd64 bzImage
#   target/linux/vmlinux            the ELF vmlinux inside it (boots as PVH)
#   target/linux/initramfs.cpio.gz  busybox-static; /init prints the marker
#                                   BERTH-LINUX-SMOKE-OK and powers off
# Idempotent: a filled cache is reused. Needs apt (run as root for installs).
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${BERTH_LINUX_CACHE:-${HOME:-/root}/.cache/berth/linux}
out="$repo/target/linux"
mkdir -p "$cache" "$out"
cd "$cache"

need_apt_lists() {
	apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get update -qq
}

if [ ! -s vmlinuz ]; then
	need_apt_lists linux-image-cloud-amd64
	pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	[ -n "$pkg" ] || { echo "fetch.sh: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
	rm -rf kroot && apt-get download -qq "$pkg" && dpkg-deb -x "$pkg"_*.deb kroot
	cp kroot/boot/vmlinuz-* vmlinuz.tmp && mv vmlinuz.tmp vmlinuz
	rm -rf kroot "$pkg"_*.deb
fi

if [ ! -s vmlinux ]; then
	command -v lz4 >/dev/null 2>&1 || { need_apt_lists lz4; apt-get install -y -qq lz4 >/dev/null; }
	"$repo/tests/linux/extract-vmlinux.sh" vmlinuz vmlinux.tmp && mv vmlinux.tmp vmlinux
fi

if [ ! -s initramfs.cpio.gz ]; then
	need_apt_lists busybox-static
	rm -rf bb initramfs && apt-get download -qq busybox-static && dpkg-deb -x busybox-static_*.deb bb
	mkdir -p initramfs/bin initramfs/proc initramfs/sys initramfs/dev
	cp bb/bin/busybox initramfs/bin/busybox
	cat > initramfs/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo "BERTH-LINUX-SMOKE-OK cpus=$(/bin/busybox grep -c ^processor /proc/cpuinfo)"
/bin/busybox poweroff -f
INIT
	chmod +x initramfs/init
	(cd initramfs && find . | ../bb/bin/busybox cpio -o -H newc 2>/dev/null) | gzip -9 > initramfs.cpio.gz.tmp
	mv initramfs.cpio.gz.tmp initramfs.cpio.gz
	rm -rf bb initramfs busybox-static_*.deb
fi

for f in vmlinuz vmlinux initramfs.cpio.gz; do
	ln -sf "$cache/$f" "$out/$f"
done
echo "fetch.sh: $(ls -l "$out" | tail -n +2 | wc -l) files in $out"
