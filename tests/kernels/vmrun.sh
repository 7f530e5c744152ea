#!/usr/bin/env bash
# vmrun.sh: run a command as root inside a VM booted on a real Debian kernel (the stock images users
# run, from Debian's archive), with the host's filesystem visible (read-only, writes go to a tmpfs
# overlay that dies with the VM). Built on virtme-ng + QEMU. The kernel matrix of `make test`
# (tests/kernels/vm.py) drives it; it installs QEMU, virtme-ng and the kernels itself.
#
#   vmrun.sh KERNEL -- COMMAND...  boot KERNEL (1 vCPU, 2 GiB), run COMMAND as root in the current
#                                   directory, print its stdout/stderr, exit with its exit code
#                                   (124: NWVM_TIMEOUT hit; 125: vmrun itself failed)
#   vmrun.sh setup                 host packages (apt) + virtme-ng (pip, in $NWVM_DIR/venv); idempotent
#   vmrun.sh fetch KERNEL...       download + unpack image, modules and headers into $NWVM_DIR/k/ABI
#   vmrun.sh list                  kernel ABIs the configured Debian suites offer (amd64 flavour)
#   vmrun.sh resolve KERNEL        print the ABI name an alias resolves to
#
# KERNEL: a Debian ABI name of the generic flavour (6.1.0-57-amd64, 5.10.0-46-amd64,
#         6.12.117+deb12-amd64; `list` shows them; -cloud-amd64 has no 9p and cannot boot here)
#         or a series: 5.10 (bullseye), 6.1 (bookworm), 6.12 (bookworm-security's linux-6.12)
#         = the newest ABI of that series.
# `run` does `setup` and `fetch` itself when needed, so on a fresh machine this is enough:
#   tests/kernels/vmrun.sh 6.1 -- uname -r
#
# Env: NWVM_DIR (/opt/netwatchd-kernels: cache of kernels, apt lists, venv; must stay visible in the guest,
#        so not under /var/cache, /var/tmp or /var/log, which it hides with tmpfs), NWVM_MEM (2G), NWVM_CPUS (1), NWVM_TIMEOUT (1800 s, whole
#        VM), NWVM_ACCEL (auto|kvm|tcg; auto = kvm only where /dev/kvm is real hardware
#        virtualisation, else tcg: this host's /dev/kvm is nested PVM and cannot run stock kernels),
#        NWVM_RWDIR (host directories, space-separated, shared read-write into the guest, e.g. to
#        collect logs), NWVM_VERBOSE=1 (show the kernel console), NWVM_APPEND (more kernel
#        parameters), NWVM_MIRROR (http://deb.debian.org).
set -uo pipefail

NWVM_DIR=${NWVM_DIR:-/opt/netwatchd-kernels}
MEM=${NWVM_MEM:-2G}
CPUS=${NWVM_CPUS:-1}
TIMEOUT=${NWVM_TIMEOUT:-1800}
ACCEL=${NWVM_ACCEL:-auto}
MIRROR=${NWVM_MIRROR:-http://deb.debian.org}
VNG_VERSION=1.42
HOST_PKGS="qemu-system-x86 busybox-static kmod udev iproute2 file binutils python3-venv"
NOISY_MODULES=ahci,libahci,libata,sr_mod,cdrom,sg,i2c_i801,i2c_smbus,lpc_ich,iTCO_wdt,iTCO_vendor_support,intel_pmc_bxt,i6300esb,pcspkr,psmouse,serio_raw,evdev,kvm,kvm_amd,kvm_intel,ccp,button,joydev,intel_rapl_msr,intel_rapl_common,powernow_k8,acpi_cpufreq,aesni_intel,ghash_clmulni_intel,crc32_pclmul,crct10dif_pclmul,sha1_ssse3,sha256_ssse3,sha512_ssse3,polyval_clmulni,aria_aesni_avx_x86_64,camellia_aesni_avx2,sm4_aesni_avx2_x86_64
APTDIR=$NWVM_DIR/apt
APT_OPTS=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache" -o "Debug::NoLocking=1"
          -o "APT::Sandbox::User=root")

die() { echo "vmrun: $*" >&2; exit 125; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
say() { echo "vmrun: $*" >&2; }

# -- setup -------------------------------------------------------------------------------------
do_setup() {
  [ "$(id -u)" = 0 ] || die "run as root"
  local missing=()
  for p in $HOST_PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    # a stale or empty package list finds nothing: refresh it first (waits for apt's lock)
    apt-get -o DPkg::Lock::Timeout=900 update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  fi
  if [ ! -x "$NWVM_DIR/venv/bin/vng" ]; then
    say "installing virtme-ng $VNG_VERSION (pip)"
    mkdir -p "$NWVM_DIR"
    /usr/bin/python3 -m venv "$NWVM_DIR/venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$NWVM_DIR/venv/bin/pip" install -q "virtme-ng==$VNG_VERSION" >/dev/null || die "pip install virtme-ng failed"
  fi
}

# -- Debian's kernels, through a private apt state (the host's sources and lists stay as they are)
apt_lists() {
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
  local kr=/usr/share/keyrings/debian-archive-keyring.gpg
  cat > "$APTDIR/sources.list.new" <<EOF
deb [signed-by=$kr] $MIRROR/debian bookworm main
deb [signed-by=$kr] $MIRROR/debian-security bookworm-security main
deb [signed-by=$kr] $MIRROR/debian bookworm-backports main
deb [signed-by=$kr] $MIRROR/debian bullseye main
deb [signed-by=$kr] $MIRROR/debian-security bullseye-security main
EOF
  mv "$APTDIR/sources.list.new" "$APTDIR/sources.list"
  # refresh at most every 6 hours
  if [ -z "$(find "$APTDIR/lists" -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -1)" ]; then
    apt-get "${APT_OPTS[@]}" update -qq >/dev/null 2>&1 || die "apt-get update (private lists in $APTDIR) failed"
  fi
}
acache() { apt-cache "${APT_OPTS[@]}" "$@"; }

abis() {  # every ABI the suites have with both an image (signed or not) and headers
  apt_lists
  local all; all=$(apt-get "${APT_OPTS[@]}" indextargets --format '$(FILENAME)' 'Identifier: Packages' \
    | xargs /usr/lib/apt/apt-helper cat-file | sed -n 's/^Package: linux-\(image\|headers\)-\([0-9]\)/\1 \2/p' | sort -u)
  comm -12 <(awk '$1=="image"{print $2}' <<<"$all" | sed 's/-unsigned$//' | sort -u) \
           <(awk '$1=="headers"{print $2}' <<<"$all" | sort -u) \
    | grep -E '^[0-9]+\.[0-9]+\.[0-9][^ ]*-amd64$' | sort -V
}
do_list() { abis; }

resolve() {  # alias or ABI -> ABI; a series X.Y -> its newest generic (not rt, cloud or bpo-to-bullseye) ABI
  case "$1" in
    *-amd64) echo "$1"; return 0 ;;
    [0-9]*.[0-9]*) ;;
    *) die "KERNEL is an ABI name (6.1.0-57-amd64) or a series (5.10, 6.1, 6.12), not '$1'" ;;
  esac
  abis | grep -F "$1." | grep -E "^${1//./\\.}\.[0-9]" | grep -v -e '-rt-' -e '-cloud-' -e '\.deb11\.' \
    | tail -1 | grep . || die "no Debian kernel of series '$1' (vmrun.sh list)"
}

do_fetch() {  # ABI...
  local abi dir tmp common
  for abi in "$@"; do
    dir=$NWVM_DIR/k/$abi
    [ -f "$dir/.ok" ] && continue
    apt_lists
    say "fetching linux-image-$abi + headers"
    tmp=$(mktemp -d "$NWVM_DIR/dl.XXXXXX")
    common=$(acache show "linux-headers-$abi" 2>/dev/null | sed -n 's/^Depends: //p' | head -1 \
             | tr ',' '\n' | grep -o 'linux-headers-[^ ]*-common[^ ]*' | head -1)
    local img=linux-image-$abi
    acache show "$img" >/dev/null 2>&1 || img=linux-image-$abi-unsigned
    ( cd "$tmp" && apt-get "${APT_OPTS[@]}" download -qq "$img" "linux-headers-$abi" ${common:+"$common"} ) >/dev/null 2>&1 \
      || { rm -rf "$tmp"; die "download of $img / linux-headers-$abi failed (vmrun.sh list shows what exists)"; }
    rm -rf "$dir"; mkdir -p "$dir"
    for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$dir" || die "dpkg-deb -x $d"; done
    rm -rf "$tmp"
    # the packages point build/source at /usr/src; point them into the cache instead
    ln -sfn "$dir/usr/src/linux-headers-$abi" "$dir/lib/modules/$abi/build"
    [ -n "$common" ] && ln -sfn "$dir/usr/src/${common}" "$dir/lib/modules/$abi/source"
    depmod -a -b "$dir" "$abi" || die "depmod for $abi"
    [ -f "$dir/boot/vmlinuz-$abi" ] || die "no $dir/boot/vmlinuz-$abi"
    touch "$dir/.ok"
  done
}

# -- run ---------------------------------------------------------------------------------------
real_kvm() {  # hardware virtualisation, not a nested PVM /dev/kvm
  [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -qw -e vmx -e svm /proc/cpuinfo
}

do_run() {  # ABI COMMAND...
  local abi=$1; shift
  local dir=$NWVM_DIR/k/$abi rc
  RUNDIR=$(mktemp -d "$NWVM_DIR/run.XXXXXX")
  trap 'rm -rf "$RUNDIR"' EXIT
  {
    echo '# guest preamble'
    echo 'mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null'
    echo 'mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null'
    echo 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null'
    echo '[ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ] || mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null'
    echo 'ip link set lo up 2>/dev/null; ulimit -l unlimited'
    # virtme-ng bind-mounts its own copy over /etc/shadow: useradd/passwd (rename) then fail
    echo 'mountpoint -q /etc/shadow && umount /etc/shadow'
    echo 'hostname nwvm 2>/dev/null'
    echo "export NETWATCHD_VM=1 NETWATCHD_VM_KERNEL=$(printf %q "$abi") CI=$(printf %q "${CI:-}") PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    echo "cd $(printf %q "$PWD") 2>/dev/null || cd /"
    printf '%q ' "$@"; echo
  } > "$RUNDIR/cmd.sh"
  local args=(--run "$dir/boot/vmlinuz-$abi" --cpus "$CPUS" --memory "$MEM" --user root --cwd /
              --exec "bash $RUNDIR/cmd.sh")
  local accel=$ACCEL
  [ "$accel" = auto ] && { real_kvm && accel=kvm || accel=tcg; }
  [ "$accel" = tcg ] && args+=(--disable-kvm)
  # udev's coldplug would modprobe drivers for q35's emulated chipset (AHCI, SMBus, watchdogs, ...)
  # one by one over 9p under TCG: ~15 s of boot on 5.10, for devices nobody uses
  args+=(--append "modprobe.blacklist=$NOISY_MODULES ${NWVM_APPEND:-}")
  [ "${NWVM_VERBOSE:-0}" = 1 ] && args+=(--verbose)
  for d in ${NWVM_RWDIR:-}; do args+=(--rwdir "$d"); done
  # vng's QEMU opens /proc/self/fd/1 and /2 anew: two files at independent offsets clobber each
  # other when both point at one regular file, so they always go through pipes.
  PATH=$NWVM_DIR/venv/bin:$PATH timeout -k 15 "$TIMEOUT" "$NWVM_DIR/venv/bin/vng" "${args[@]}" \
    2> >(cat >&2) < /dev/null | cat
  rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && say "timed out after ${TIMEOUT}s (NWVM_TIMEOUT)"
  return "$rc"
}

main() {
  case "${1:-}" in
    setup) do_setup ;;
    list) do_list ;;
    resolve) shift; resolve "${1:?kernel}" ;;
    fetch) shift; [ $# -gt 0 ] || die "fetch KERNEL..."; do_setup; mkdir -p "$NWVM_DIR"
           want=(); for k in "$@"; do want+=("$(resolve "$k")") || exit 125; done
           exec 9> "$NWVM_DIR/.lock"; flock 9; do_fetch "${want[@]}" ;;
    ""|-h|--help) usage ;;
    *)
      [ "${2:-}" = -- ] && [ $# -gt 2 ] || usage
      do_setup; mkdir -p "$NWVM_DIR"
      abi=$(resolve "$1") || exit 125; shift 2
      ( exec 9> "$NWVM_DIR/.lock"; flock 9; do_fetch "$abi" ) || exit 125
      do_run "$abi" "$@" ;;
  esac
}

# all of it parsed before anything runs: editing this file under a running VM stays harmless
main "$@"; exit
