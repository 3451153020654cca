#!/bin/bash
# install.sh -- turn a fresh Raspberry Pi OS or Debian into a seccam camera: trixie (Debian 13,
# today's Raspberry Pi OS) is the primary target, bookworm (Debian 12) stays supported; on arm64
# (Pi 3, 4, 5, Zero 2 W with 64-bit Pi OS), armhf (32-bit Pi OS, Pi Zero W) and amd64.
#
#   sudo ./install.sh                  install, or upgrade in place (re-running changes nothing)
#   sudo ./install.sh --dry-run        print every change it would make, make none
#   sudo ./install.sh --uninstall      remove code, units, cron file and the empty directories it
#                                      made; keep config, key and spool
#   sudo ./install.sh --uninstall --purge   ... and the config, the camera key, the spool and the user
#   ./install.sh --root DIR            install into a staging root DIR (tests, image builders)
#
# Options: --force (try another Debian-based release or architecture: Ubuntu, Debian testing ...),
# --demo / --no-demo (run the demo at the end or not; by default it runs on a first installation
# when there is no GPIO chip and no camera, e.g. in a container or CI, and not again on an
# upgrade), -h/--help.
#
# What it does, each step only when it is not done yet (docs/operations.md has the details):
#   1. Debian packages from the distribution (apt; no pip): PACKAGES below, python3-lgpio where
#      the archive has it (a Pi 5's GPIO needs it). Then it says which GPIO pin library gpiozero
#      will use on this board (/proc/device-tree/model) and warns when none that works is there.
#   2. The system user `seccam` (no login shell, home /var/lib/seccam), in groups gpio and video
#      (created as system groups when missing: the units name them).
#   3. Directories: /etc/seccam 0750 root:seccam, /var/lib/seccam 0700 seccam (GnuPG home
#      /var/lib/seccam/gnupg), /var/spool/seccam 0750 seccam.
#   4. The code under /opt/seccam (bin, jobs, lib, docs), byte-compiled with /usr/bin/python3;
#      /usr/local/bin/seccam -> /opt/seccam/bin/seccam.
#   5. Conffiles, with dpkg's conffile rule: /etc/cron.d/seccam (from `crontab`) and
#      /etc/seccam/seccam.toml (from docs/example.toml). A file you edited is kept; when the
#      default changed too, the new default is written beside it as FILE.dist. The checksum of
#      the default last installed is kept in /var/lib/seccam-install/ (root's alone: the service
#      user must not be able to steer what root writes) to tell the cases apart.
#   6. systemd units into /etc/systemd/system (where the admin's units live, so `systemctl cat`
#      shows them at once; change them with drop-ins: `systemctl edit UNIT`), with the sandbox
#      every seccam service shares (seccam-.service.d/hardening.conf), enabled by their
#      [Install] symlinks, as `systemctl enable` does; started (restarted after an upgrade)
#      only when systemd is PID 1. cron starts the jobs' units (bin/seccam-job).
#   7. The camera key, once (`seccam keys init` as user seccam) when [account] is configured.
#      Never again: Delta Chat treats a new key as a new contact.
#   8. The demo cycle (`seccam demo`) on a first installation on machines without GPIO and cameras.
#
# --root DIR: every path is prefixed with DIR, and what needs the real system is not done but
# written to DIR/var/lib/seccam-install/staged: the packages to install, the user to create and
# the owner, group and mode every path must get (files are owned by whoever runs install.sh).
# No apt, useradd, chown, systemctl, key or demo in that mode.
#
# Environment (for tests): SECCAM_OS_RELEASE=FILE instead of /etc/os-release,
# SECCAM_ARCH=ARCH instead of `dpkg --print-architecture`, SECCAM_DT_MODEL=FILE instead of
# /proc/device-tree/model (the board, for the GPIO check).
#
# Exit status: 0 done, 1 a step failed (the message names it), 64 usage, 69 unsupported system.
set -euo pipefail

readonly PROG=install.sh
readonly EX_USAGE=64
readonly EX_UNAVAILABLE=69

readonly SERVICE_USER=seccam
readonly PREFIX=/opt/seccam
readonly ETC_DIR=/etc/seccam
readonly CONFIG=/etc/seccam/seccam.toml
readonly STATE_DIR=/var/lib/seccam
readonly GNUPG_HOME=/var/lib/seccam/gnupg
readonly RECORD_DIR=/var/lib/seccam-install
# Where versions before 2026-12 kept the records: inside the service user's own directory,
# where that user could plant a symlink for root to follow. Read once (never through a
# symlink), then removed.
readonly OLD_RECORD_DIR=/var/lib/seccam/install
readonly DROP_IN=seccam-.service.d/hardening.conf
readonly SPOOL_DIR=/var/spool/seccam
readonly CRON_FILE=/etc/cron.d/seccam
readonly UNIT_DIR=/etc/systemd/system
readonly BIN_LINK=/usr/local/bin/seccam
readonly SYSTEM_PYTHON=/usr/bin/python3
readonly NOLOGIN=/usr/sbin/nologin

# What goes under /opt/seccam, relative to the repository.
readonly CODE_DIRS=(bin jobs lib docs)
readonly CODE_FILES=(README.md crontab)
# Runtime packages (Debian's own; nothing from pip at run time).
readonly PACKAGES=(python3 python3-gpiozero python3-gnupg python3-schedule gnupg fswebcam qrencode cron
  util-linux)
# Installed only where the archive has them (Raspberry Pi OS: gpiozero 2.x's default pin factory).
readonly OPTIONAL_PACKAGES=(python3-lgpio)
# Units enabled and started; the .service units of the jobs are started by the .path units.
readonly ENABLED_UNITS=(seccam-poller.service seccam-capture.path seccam-send.path)
readonly GROUPS_NEEDED=(gpio video)
readonly SUPPORTED_ARCHES=(amd64 arm64 armhf armel)
# Debian releases (VERSION_ID and VERSION_CODENAME of /etc/os-release), the primary one first.
# Raspberry Pi OS says ID=debian (64-bit) or ID=raspbian (32-bit) with Debian's numbers. The
# packages above have the same names in both; what differs at run time (GnuPG 2.4/2.2,
# python3-gnupg 0.5/0.4, Python 3.13/3.11) is handled in the code, one path per difference.
readonly SUPPORTED_RELEASES=("13 trixie" "12 bookworm")

# Set once by parse_args / main.
ROOT=""
DRY_RUN=0
ACTION=install
PURGE=0
FORCE=0
DEMO=auto
SRC=""
WORK=""

# What this run did, for the summary and the service restarts.
UPGRADE=0
CREATED_DIRS=()
CHANGES=0
LAST_CHANGED=0
CODE_CHANGED=0
CHANGED_UNITS=()
NOTES=()
SKIPPED=()
NEXT_STEPS=()
STAGED=()

# -- small helpers ----------------------------------------------------------------------------

say() {
  printf '%s: %s\n' "${PROG}" "$*"
}

warn() {
  printf '%s: warning: %s\n' "${PROG}" "$*" >&2
}

abort() {
  printf '%s: error: %s\n' "${PROG}" "$*" >&2
  exit 1
}

usage_error() {
  printf '%s: error: %s (see --help)\n' "${PROG}" "$*" >&2
  exit "${EX_USAGE}"
}

need_cmd() {
  if ! command -v "$1" >/dev/null 2>&1; then
    abort "need '$1' (command not found)${2:+; $2}"
  fi
}

# Run a check or read-only step that must work; name it when it does not.
ensure() {
  "$@" || abort "Failed during: $*"  # shcov: skip - used only by steps of a real installation (python check, demo)
}

# THE executor: every change to the system goes through here, so --dry-run shows exactly what
# a real run does.
run() {
  CHANGES=$((CHANGES + 1))
  if ((DRY_RUN)); then
    say "would run: $*"
    return 0
  fi
  say "+ $*"
  "$@" || abort "Failed during: $*"
}

# Like run, for a step whose failure is reported but does not stop the installation.
try_run() {
  # shcov: skip-begin - used only for the camera key of a real installation (runuser)
  if ((DRY_RUN)); then
    say "would run: $*"
    return 0
  fi
  say "+ $*"
  "$@"
  # shcov: skip-end
}

# The path PATH of the target system (inside --root DIR when given).
target() {
  printf '%s%s' "${ROOT}" "$1"
}

sha256_of() {
  local sum
  sum=$(sha256sum "$1") || abort "Failed during: sha256sum $1"
  printf '%s\n' "${sum%% *}"
}

# -- arguments --------------------------------------------------------------------------------

print_help() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

parse_args() {
  while (($#)); do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --uninstall) ACTION=uninstall ;;
      --purge) PURGE=1 ;;
      --force) FORCE=1 ;;
      --demo) DEMO=yes ;;
      --no-demo) DEMO=no ;;
      --root)
        (($# >= 2)) || usage_error "--root needs a directory"
        ROOT=$2
        shift
        ;;
      --root=*) ROOT=${1#--root=} ;;
      -h | --help)
        print_help
        exit 0
        ;;
      *) usage_error "unknown argument: $1" ;;
    esac
    shift
  done
  if ((PURGE)) && [[ "${ACTION}" != uninstall ]]; then
    usage_error "--purge only goes with --uninstall"
  fi
  if [[ -n "${ROOT}" ]]; then
    [[ -d "${ROOT}" ]] || usage_error "--root ${ROOT}: not a directory"
    ROOT=$(cd "${ROOT}" && pwd -P)
    if [[ "${ROOT}" == / ]]; then
      ROOT=""
    fi
  fi
}

# -- the system we run on ---------------------------------------------------------------------

# The value of KEY in an os-release file (quotes removed), or nothing.
os_field() {
  local key=$1 file=$2 line value
  while IFS= read -r line || [[ -n "${line}" ]]; do
    if [[ "${line}" == "${key}="* ]]; then
      value=${line#*=}
      value=${value#[\"\']}
      value=${value%[\"\']}
      printf '%s\n' "${value}"
      return 0
    fi
  done <"${file}"
}

os_release_file() {
  if [[ -n "${SECCAM_OS_RELEASE:-}" ]]; then
    printf '%s\n' "${SECCAM_OS_RELEASE}"
  elif [[ -n "${ROOT}" && -r "${ROOT}/etc/os-release" ]]; then
    printf '%s\n' "${ROOT}/etc/os-release"
  else
    printf '%s\n' /etc/os-release
  fi
}

architecture() {
  if [[ -n "${SECCAM_ARCH:-}" ]]; then
    printf '%s\n' "${SECCAM_ARCH}"
  elif command -v dpkg >/dev/null 2>&1; then
    dpkg --print-architecture
  else
    uname -m
  fi
}

unsupported() {
  printf '%s: error: unsupported system: %s\n' "${PROG}" "$1" >&2
  printf '%s: seccam installs on Raspberry Pi OS or Debian 13 (trixie) and 12 (bookworm), on %s.\n' \
    "${PROG}" "${SUPPORTED_ARCHES[*]}" >&2
  if [[ -n "${2:-}" ]]; then
    printf '%s: %s\n' "${PROG}" "$2" >&2
  fi
  exit "${EX_UNAVAILABLE}"
}

check_system() {
  local file id like version codename pretty arch found
  file=$(os_release_file)
  if [[ ! -r "${file}" ]]; then
    unsupported "cannot read ${file} (is this a Debian system?)"
  fi
  id=$(os_field ID "${file}")
  like=$(os_field ID_LIKE "${file}")
  version=$(os_field VERSION_ID "${file}")
  codename=$(os_field VERSION_CODENAME "${file}")
  pretty=$(os_field PRETTY_NAME "${file}")
  arch=$(architecture)
  found="found ${pretty:-an unnamed system} (ID=${id:-?} VERSION_ID=${version:-?}"
  found+=" VERSION_CODENAME=${codename:-?}, from ${file}), architecture ${arch}"
  local debian_based=0 supported_os=0 supported_arch=0 a release
  if [[ "${id}" == debian || "${id}" == raspbian || " ${like} " == *" debian "* ]]; then
    debian_based=1
  fi
  if [[ "${id}" == debian || "${id}" == raspbian ]]; then
    for release in "${SUPPORTED_RELEASES[@]}"; do
      # The version number decides; without one (as on testing), so does a matching codename.
      if [[ "${version}" == "${release% *}" || (-z "${version}" && "${codename}" == "${release#* }") ]]; then
        supported_os=1
      fi
    done
  fi
  for a in "${SUPPORTED_ARCHES[@]}"; do
    if [[ "${arch}" == "${a}" ]]; then
      supported_arch=1
    fi
  done
  if ((supported_os && supported_arch)); then
    say "system: ${pretty:-${id} ${version}} on ${arch}"
    return 0
  fi
  if ((!debian_based)); then
    unsupported "${found}" "It needs Debian's apt and packages; --force does not change that."
  fi
  if ((!FORCE)); then
    unsupported "${found}" "To try anyway on this Debian-based system, run again with --force."
  fi
  warn "${found}: not supported, going on because of --force"
}

# Decide privilege once: a real installation needs root; a dry run and a staging root do not.
check_privilege() {
  if [[ "${EUID}" -eq 0 ]]; then
    return 0
  elif [[ -n "${ROOT}" ]]; then
    NOTES+=("not root: the files in ${ROOT} belong to $(id -un); the staged list says who should own them")
  elif ((DRY_RUN)); then
    warn "not root: some state is unreadable, so the list of changes may be longer than a real run's"
  else
    abort "installing needs root: run  sudo ./${PROG}"
  fi
}

check_tools() {
  local cmd
  for cmd in install find cmp sha256sum stat ln readlink mktemp rm mv chmod; do
    need_cmd "${cmd}"
  done
  if [[ -z "${ROOT}" ]]; then
    for cmd in dpkg-query apt-get; do
      need_cmd "${cmd}" "seccam needs a Debian system"
    done
  fi
}

# -- changes that converge --------------------------------------------------------------------

# Root mode: remember what the real system would need (written to the staged file).
stage() {
  STAGED+=("$*")
}

# install(1)'s owner options: in the real system the owner and group; in a staging root none
# (the user does not exist there), the intent is staged instead.
owner_args() {
  if [[ -z "${ROOT}" ]]; then
    printf '%s\n' -o "$1" -g "$2"
  fi
}

# Directories this installation creates (not there before), recorded in RECORD_DIR/created-dirs
# so that --uninstall removes them again when they are empty. The trees --uninstall keeps or
# removes whole (configuration, state, spool, records, code) are not recorded.
readonly CREATED_DIRS_RECORD=/var/lib/seccam-install/created-dirs

note_new_dirs() {
  local dir=$1
  while [[ "${dir}" != / && ! -d "$(target "${dir}")" ]]; do
    case "${dir}/" in
      "${ETC_DIR}/"* | "${STATE_DIR}/"* | "${SPOOL_DIR}/"* | "${RECORD_DIR}/"* | "${PREFIX}/"*) ;;
      *) CREATED_DIRS+=("${dir}") ;;
    esac
    dir=$(dirname "${dir}")
  done
}

# Make an existing PATH (in the target) have MODE, OWNER and GROUP.
fix_meta() {
  local path=$1 mode=$2 owner=$3 group=$4 have
  have=$(stat -c '%a' "${path}")
  if [[ "${have}" != "${mode#0}" ]]; then
    run chmod "${mode}" "${path}"
  fi
  if [[ -z "${ROOT}" ]]; then
    have=$(stat -c '%U:%G' "${path}")
    if [[ "${have}" != "${owner}:${group}" ]]; then
      run chown "${owner}:${group}" "${path}"  # shcov: skip - a real installation as root with a wrong owner
    fi
  fi
}

ensure_dir() {
  local path=$1 mode=$2 owner=$3 group=$4 dir
  local -a own
  dir=$(target "${path}")
  stage "owner ${owner}:${group} ${mode} ${path}"
  if [[ ! -d "${dir}" ]]; then
    note_new_dirs "${path}"
    mapfile -t own < <(owner_args "${owner}" "${group}")
    run install -d -m "${mode}" "${own[@]}" "${dir}"
    return 0
  fi
  fix_meta "${dir}" "${mode}" "${owner}" "${group}"
}

# Install SRC as PATH (in the target) unless it is already identical; LAST_CHANGED says.
ensure_file() {
  local src=$1 path=$2 mode=$3 owner=$4 group=$5 file
  local -a own
  file=$(target "${path}")
  LAST_CHANGED=0
  stage "owner ${owner}:${group} ${mode} ${path}"
  if [[ -f "${file}" && ! -L "${file}" ]] && cmp -s "${src}" "${file}"; then
    fix_meta "${file}" "${mode}" "${owner}" "${group}"
    return 0
  fi
  note_new_dirs "$(dirname "${path}")"
  mapfile -t own < <(owner_args "${owner}" "${group}")
  run install -D -m "${mode}" "${own[@]}" "${src}" "${file}"
  LAST_CHANGED=1
}

# Install SRC as PATH; readers never see half a file: write FILE.seccam-new, then rename.
# (cron ignores names with a dot in /etc/cron.d, so it never reads the temporary file.)
ensure_file_atomic() {
  local src=$1 path=$2 mode=$3 owner=$4 group=$5 file
  local -a own
  file=$(target "${path}")
  note_new_dirs "$(dirname "${path}")"
  mapfile -t own < <(owner_args "${owner}" "${group}")
  run install -D -m "${mode}" "${own[@]}" "${src}" "${file}.seccam-new"
  run mv -f "${file}.seccam-new" "${file}"
}

# Write TEXT into PATH (in the target) unless it already holds exactly that.
ensure_content() {
  local text=$1 path=$2 mode=$3 owner=$4 group=$5 tmp
  tmp=$(mktemp "${WORK}/${path##*/}.XXXXXX")
  printf '%s' "${text}" >"${tmp}"
  ensure_file "${tmp}" "${path}" "${mode}" "${owner}" "${group}"
}

ensure_symlink() {
  local dest=$1 path=$2 link
  link=$(target "${path}")
  if [[ -L "${link}" && "$(readlink "${link}")" == "${dest}" ]]; then
    return 0
  fi
  if [[ -e "${link}" && ! -L "${link}" ]]; then
    warn "${path} exists and is not a symlink; replacing it"
  fi
  if [[ ! -d "$(dirname "${link}")" ]]; then
    note_new_dirs "$(dirname "${path}")"
    run install -d -m 0755 "$(dirname "${link}")"
  fi
  run ln -sfn "${dest}" "${link}"
}

remove_path() {
  local path=$1 file
  file=$(target "${path}")
  if [[ -e "${file}" || -L "${file}" ]]; then
    run rm -rf "${file}"
  fi
}

# -- 1. packages ------------------------------------------------------------------------------

package_installed() {
  local status
  status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
  [[ "${status}" == "install ok installed" ]]
}

package_available() {
  apt-cache show "$1" >/dev/null 2>&1
}

install_packages() {
  if [[ -n "${ROOT}" ]]; then
    stage "packages ${PACKAGES[*]}"
    stage "packages-if-available ${OPTIONAL_PACKAGES[*]}"
    SKIPPED+=("packages: not installed into a staging root (listed in the staged file)")
    return 0
  fi
  local -a missing=()
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    package_installed "${pkg}" || missing+=("${pkg}")
  done
  if ((${#missing[@]})); then
    # A fresh image's package lists are old: refresh them before installing.
    run env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  fi
  for pkg in "${OPTIONAL_PACKAGES[@]}"; do
    if ! package_installed "${pkg}" && package_available "${pkg}"; then
      missing+=("${pkg}")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  # --no-install-recommends: cron would otherwise pull in a mail server.
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

check_python() {
  if [[ ! -x "${SYSTEM_PYTHON}" ]]; then
    # shcov: skip-begin - the tests themselves run on /usr/bin/python3 3.11, so it is there
    if ((DRY_RUN)); then
      return 0  # apt-get would install it
    fi
    abort "need ${SYSTEM_PYTHON} (Debian's python3)"
    # shcov: skip-end
  fi
  if ! "${SYSTEM_PYTHON}" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    abort "${SYSTEM_PYTHON} is older than 3.11 (seccam needs tomllib): not Debian 12 or 13?"  # shcov: skip - as above
  fi
  if [[ -z "${ROOT}" ]] && ! ((DRY_RUN)); then
    ensure "${SYSTEM_PYTHON}" -c 'import gnupg, gpiozero, schedule'  # shcov: skip - a real installation only
  fi
}

# Which pin library gpiozero will use on this board, and a warning when none that works here
# is installed (RPi.GPIO does not drive a Raspberry Pi 5's GPIO). seccam.board decides; it
# only looks (no gpiozero import, no hardware access), so a dry run asks it too.
report_gpio() {
  if [[ -n "${ROOT}" ]]; then
    SKIPPED+=("GPIO: the pin library is checked on the device (install.sh there says which one gpiozero uses)")
    return 0
  fi
  if [[ ! -x "${SYSTEM_PYTHON}" ]]; then
    return 0  # shcov: skip - a dry run on a system without python3 yet (apt-get would install it)
  fi
  local line
  local -a model=()
  if [[ -n "${SECCAM_DT_MODEL:-}" ]]; then
    model=(--model-file "${SECCAM_DT_MODEL}")
  fi
  while IFS= read -r line; do
    if [[ "${line}" == "warning: "* ]]; then
      warn "GPIO: ${line#warning: }"
    else
      say "GPIO: ${line}"
    fi
  done < <(PYTHONPATH="${SRC}/lib${PYTHONPATH:+:${PYTHONPATH}}" "${SYSTEM_PYTHON}" -m seccam.board "${model[@]}")
}

# -- 2. user and groups -----------------------------------------------------------------------

ensure_user() {
  if [[ -n "${ROOT}" ]]; then
    stage "user ${SERVICE_USER} system home=${STATE_DIR} shell=${NOLOGIN} groups=${GROUPS_NEEDED[*]}"
    SKIPPED+=("user ${SERVICE_USER}: not created in a staging root (staged)")
    return 0
  fi
  local group
  for group in "${GROUPS_NEEDED[@]}"; do
    if ! getent group "${group}" >/dev/null; then
      # The units name these groups (SupplementaryGroups=); systemd refuses a unit whose group is missing.
      run groupadd --system "${group}"
    fi
  done
  if ! getent passwd "${SERVICE_USER}" >/dev/null; then
    run useradd --system --user-group --home-dir "${STATE_DIR}" --no-create-home \
      --shell "${NOLOGIN}" --comment "seccam security camera" "${SERVICE_USER}"
  fi
  local have
  have=" $(id -nG "${SERVICE_USER}" 2>/dev/null || true) "
  for group in "${GROUPS_NEEDED[@]}"; do
    if [[ "${have}" != *" ${group} "* ]]; then
      run usermod -a -G "${group}" "${SERVICE_USER}"
    fi
  done
}

# -- 3. directories ---------------------------------------------------------------------------

ensure_directories() {
  ensure_dir "${ETC_DIR}" 0750 root "${SERVICE_USER}"
  ensure_dir "${STATE_DIR}" 0700 "${SERVICE_USER}" "${SERVICE_USER}"
  ensure_service_dir "${GNUPG_HOME}" 0700
  ensure_dir "${RECORD_DIR}" 0755 root root
  ensure_dir "${SPOOL_DIR}" 0750 "${SERVICE_USER}" "${SERVICE_USER}"
}

# A directory inside one the service user owns. That user can replace it with a symlink at
# any moment, so root never follows one there: a symlink is removed, ownership is changed
# with chown -h (a symlink swapped in meanwhile gets the new owner itself, nothing else), and
# the mode is set as the service user, who can do no more than it could anyway.
ensure_service_dir() {
  local path=$1 mode=$2 dir
  dir=$(target "${path}")
  stage "owner ${SERVICE_USER}:${SERVICE_USER} ${mode} ${path}"
  if [[ -L "${dir}" ]]; then
    warn "${path} was a symlink (not made by seccam); replacing it with a directory"
    run rm -f "${dir}"
  fi
  if [[ ! -d "${dir}" ]]; then
    run install -d -m "${mode}" "${dir}"
  fi
  if [[ -n "${ROOT}" ]]; then
    if [[ "$(stat -c '%a' "${dir}")" != "${mode#0}" ]]; then
      run chmod "${mode}" "${dir}"
    fi
    return 0
  fi
  # shcov: skip-begin - a real installation only (the service user exists; tests use --root)
  if [[ "$(stat -c '%U:%G' "${dir}")" != "${SERVICE_USER}:${SERVICE_USER}" ]]; then
    run chown -h "${SERVICE_USER}:${SERVICE_USER}" "${dir}"
  fi
  if [[ "$(stat -c '%a' "${dir}")" != "${mode#0}" ]]; then
    run runuser -u "${SERVICE_USER}" -- chmod "${mode}" "${dir}"
  fi
  # shcov: skip-end
}

# -- 4. code ----------------------------------------------------------------------------------

# The files to install, relative to the repository, NUL-separated.
code_files() {
  (
    cd "${SRC}"
    find "${CODE_DIRS[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0
    printf '%s\0' "${CODE_FILES[@]}"
  )
}

# True when some module under /opt/seccam/lib has no byte-compiled file for this system's
# python3 (after an upgrade from bookworm to trixie, only Python 3.11's files are there).
pyc_missing() {
  local py dir name tag=""
  while IFS= read -r -d '' py; do
    if [[ -z "${tag}" ]]; then  # only once there is code: a dry run on a bare system has no python3 yet
      tag=$("${SYSTEM_PYTHON}" -c 'import sys; print(sys.implementation.cache_tag)')
    fi
    dir=${py%/*}
    name=${py##*/}
    if [[ ! -f "${dir}/__pycache__/${name%.py}.${tag}.pyc" ]]; then
      return 0
    fi
  done < <(find "$(target "${PREFIX}")/lib" -name '*.py' -print0 2>/dev/null)
  return 1
}

install_code() {
  ensure_dir "${PREFIX}" 0755 root root
  local -A wanted=()
  local rel mode
  while IFS= read -r -d '' rel; do
    wanted[${rel}]=1
    mode=0644
    if [[ -x "${SRC}/${rel}" ]]; then
      mode=0755
    fi
    ensure_file "${SRC}/${rel}" "${PREFIX}/${rel}" "${mode}" root root
    if ((LAST_CHANGED)); then
      CODE_CHANGED=1
    fi
  done < <(code_files)
  # Files of an older version that this one no longer has.
  local base
  base=$(target "${PREFIX}")
  if [[ -d "${base}" ]]; then
    while IFS= read -r -d '' rel; do
      rel=${rel#"${base}"/}
      if [[ -z "${wanted[${rel}]:-}" ]]; then
        run rm -f "${base}/${rel}"
        CODE_CHANGED=1
      fi
    done < <(find "${base}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0)
  fi
  # The service user cannot write .pyc files, and a cold import is about 50 % slower without them.
  if ((CODE_CHANGED)) || pyc_missing; then
    local -a strip=()
    if [[ -n "${ROOT}" ]]; then
      strip=(-s "${ROOT}" -p /)  # tracebacks name /opt/seccam/..., not the staging path
    fi
    run "${SYSTEM_PYTHON}" -m compileall -q "${strip[@]}" "${base}/lib"
  fi
  ensure_symlink "${PREFIX}/bin/seccam" "${BIN_LINK}"
}

# -- 5. conffiles -----------------------------------------------------------------------------

# Install SRC as conffile PATH with dpkg's rule (see the header). NAME names its checksum record.
install_conffile() {
  local src=$1 path=$2 mode=$3 owner=$4 group=$5 name=$6
  local file record new_sum cur_sum old_sum=""
  file=$(target "${path}")
  record="${RECORD_DIR}/${name}.sha256"
  stage "owner ${owner}:${group} ${mode} ${path}"
  new_sum=$(sha256_of "${src}")
  if [[ -r "$(target "${record}")" ]]; then
    old_sum=$(<"$(target "${record}")")
  elif old_record_readable "${name}"; then
    old_sum=$(<"$(target "${OLD_RECORD_DIR}/${name}.sha256")")
  fi
  if [[ ! -e "${file}" ]]; then
    ensure_file_atomic "${src}" "${path}" "${mode}" "${owner}" "${group}"
  else
    cur_sum=$(sha256_of "${file}")
    if [[ "${cur_sum}" == "${new_sum}" ]]; then
      fix_meta "${file}" "${mode}" "${owner}" "${group}"
      if [[ -f "${file}.dist" ]] && cmp -s "${src}" "${file}.dist"; then
        remove_path "${path}.dist"  # merged: the file is the default now
      fi
    elif [[ -n "${old_sum}" && "${cur_sum}" == "${old_sum}" ]]; then
      NOTES+=("${path}: updated to the new default (you had not changed it)")
      ensure_file_atomic "${src}" "${path}" "${mode}" "${owner}" "${group}"
    else
      fix_meta "${file}" "${mode}" "${owner}" "${group}"
      if [[ "${new_sum}" != "${old_sum}" ]] && ! cmp -s "${src}" "${file}.dist"; then
        # Edited by the owner and the default changed as well: keep theirs, put ours beside it.
        ensure_file_atomic "${src}" "${path}.dist" "${mode}" "${owner}" "${group}"
        NOTES+=("${path}: kept your version; the new default is ${path}.dist (diff ${path} ${path}.dist)")
      fi
    fi
  fi
  if [[ -e "${file}.dist" ]]; then
    stage "owner ${owner}:${group} ${mode} ${path}.dist"
  fi
  ensure_content "${new_sum}"$'\n' "${record}" 0644 root root
}

# The record NAME of an older version, if it is a plain file reached without any symlink.
old_record_readable() {
  local dir file
  dir=$(target "${OLD_RECORD_DIR}")
  file="${dir}/$1.sha256"
  [[ -d "${dir}" && ! -L "${dir}" && -f "${file}" && ! -L "${file}" ]]
}

install_conffiles() {
  # cron ignores files in /etc/cron.d whose names contain a dot, so seccam.dist is never run.
  install_conffile "${SRC}/crontab" "${CRON_FILE}" 0644 root root cron.d-seccam
  install_conffile "${SRC}/docs/example.toml" "${CONFIG}" 0640 root "${SERVICE_USER}" seccam.toml
  remove_path "${OLD_RECORD_DIR}"  # rm -rf removes a symlink itself, never what it points to
}

# -- 6. units ---------------------------------------------------------------------------------

unit_names() {
  local unit
  for unit in "${SRC}"/lib/systemd/system/*; do
    if [[ -f "${unit}" ]]; then
      printf '%s\n' "${unit##*/}"
    fi
  done
}

# The targets of a unit's WantedBy= lines.
wanted_by() {
  local line target_unit
  local -a targets
  while IFS= read -r line; do
    if [[ "${line}" == WantedBy=* ]]; then
      read -r -a targets <<<"${line#WantedBy=}"  # several targets may share a line
      for target_unit in "${targets[@]}"; do
        printf '%s\n' "${target_unit}"
      done
    fi
  done <"$1"
}

install_units() {
  ensure_dir "${UNIT_DIR}" 0755 root root
  local unit wanted
  while IFS= read -r unit; do
    ensure_file "${SRC}/lib/systemd/system/${unit}" "${UNIT_DIR}/${unit}" 0644 root root
    if ((LAST_CHANGED)); then
      CHANGED_UNITS+=("${unit}")
    fi
  done < <(unit_names)
  ensure_dir "${UNIT_DIR}/${DROP_IN%/*}" 0755 root root
  ensure_file "${SRC}/lib/systemd/system/${DROP_IN}" "${UNIT_DIR}/${DROP_IN}" 0644 root root
  if ((LAST_CHANGED)); then
    CHANGED_UNITS+=("${DROP_IN}")
  fi
  for unit in "${ENABLED_UNITS[@]}"; do
    while IFS= read -r wanted; do
      ensure_symlink "${UNIT_DIR}/${unit}" "${UNIT_DIR}/${wanted}.wants/${unit}"
    done < <(wanted_by "${SRC}/lib/systemd/system/${unit}")
  done
}

systemd_running() {
  [[ -z "${ROOT}" && -d /run/systemd/system ]]
}

unit_changed() {
  # shcov: skip-begin - asked only when systemd is PID 1 (the tests run in a container without it)
  local unit
  for unit in "${CHANGED_UNITS[@]}"; do
    if [[ "${unit}" == "$1" ]]; then
      return 0
    fi
  done
  return 1
  # shcov: skip-end
}

start_services() {
  if [[ -n "${ROOT}" ]]; then
    SKIPPED+=("services: not started in a staging root (enabled; they start on the first boot)")
    return 0
  fi
  if ! systemd_running; then
    local pid1
    pid1=$(cat /proc/1/comm 2>/dev/null || echo unknown)
    local what="services: systemd is not PID 1 here (${pid1}; a container or CI?):"
    SKIPPED+=("${what} units installed and enabled, not started; no poller is running")
    return 0
  fi
  # shcov: skip-begin - systemd as PID 1 only (the tests run in a container without it)
  if ((${#CHANGED_UNITS[@]})); then
    run systemctl daemon-reload
  fi
  local unit
  for unit in "${ENABLED_UNITS[@]}"; do
    if ! systemctl is-active --quiet "${unit}"; then
      run systemctl start "${unit}"
    elif unit_changed "${unit}" || { [[ "${unit}" == *.service ]] && { ((CODE_CHANGED)) || unit_changed "${DROP_IN}"; }; }; then
      run systemctl restart "${unit}"
    fi
  done
  # shcov: skip-end
}

# -- 7. camera key ----------------------------------------------------------------------------

camera_key_exists() {
  local keys
  keys=$(target "${GNUPG_HOME}")/private-keys-v1.d
  [[ -d "${keys}" ]] && compgen -G "${keys}/*.key" >/dev/null
}

account_configured() {
  grep -Eq '^[[:space:]]*\[account\][[:space:]]*(#.*)?$' "$(target "${CONFIG}")" 2>/dev/null
}

ensure_camera_key() {
  if [[ -n "${ROOT}" ]]; then
    SKIPPED+=("camera key: not generated in a staging root (seccam setup makes it on the device)")
    NEXT_STEPS+=("on the device: sudo seccam setup   (mail account, camera key, Delta Chat QR code, test alarm)")
    return 0
  fi
  if camera_key_exists; then
    # shcov: skip-begin - needs the key and the [account] of a real installation in /var/lib/seccam and /etc/seccam
    NOTES+=("camera key: present in ${GNUPG_HOME}, kept (a new key would be a new chat)")
    return 0
    # shcov: skip-end
  fi
  if ! account_configured; then
    NEXT_STEPS+=("sudo seccam setup   (the camera's mail account and key, a QR code to scan in Delta Chat, a test alarm)")
    return 0
  fi
  # shcov: skip-begin - as above: needs the real /etc/seccam/seccam.toml with an [account]
  if try_run runuser -u "${SERVICE_USER}" -- "${PREFIX}/bin/seccam" keys init; then
    CHANGES=$((CHANGES + 1))
    NEXT_STEPS+=("connect your Delta Chat and get a test alarm: sudo seccam setup")
    NEXT_STEPS+=("back up the camera key: sudo seccam keys export-secret --output FILE")
  else
    warn "the camera key was not generated (see the error above); fix ${CONFIG}, then run:"
    warn "  sudo seccam keys init"
  fi
  # Do not leave the key generation's gpg-agent running.
  runuser -u "${SERVICE_USER}" -- gpgconf --homedir "${GNUPG_HOME}" --kill gpg-agent >/dev/null 2>&1 || true
  # shcov: skip-end
}

# -- 8. demo ----------------------------------------------------------------------------------

has_hardware() {
  compgen -G '/dev/gpiochip*' >/dev/null || compgen -G '/dev/video*' >/dev/null  # shcov: skip - asked by a real installation only
}

run_demo() {
  local why=""
  case "${DEMO}" in
    no) return 0 ;;
    auto)
      if ((UPGRADE)); then
        SKIPPED+=("demo: not run again on an upgrade (ask for it with --demo, or run it any time: sudo seccam demo)")
        return 0
      elif [[ -n "${ROOT}" ]]; then
        why="a staging root"
      elif ((DRY_RUN)); then
        why="a dry run"
      # shcov: skip-begin - a real installation only (the tests use --root or --dry-run: the branches above)
      elif has_hardware; then
        NOTES+=("GPIO or camera found: no demo; run it any time with: sudo seccam demo")
        return 0
        # shcov: skip-end
      fi
      ;;
    yes)
      if [[ -n "${ROOT}" ]] || ((DRY_RUN)); then
        why="$([[ -n "${ROOT}" ]] && echo a staging root || echo a dry run)"
      fi
      ;;
  esac
  if [[ -n "${why}" ]]; then
    SKIPPED+=("demo: not run in ${why}")
    return 0
  fi
  # shcov: skip-begin - a real installation only (.ci/run does one and runs this demo)
  say "no GPIO and no camera here: running the demo cycle as user ${SERVICE_USER} (seccam demo)"
  ensure runuser -u "${SERVICE_USER}" -- "${PREFIX}/bin/seccam" demo
  # shcov: skip-end
}

# -- the two actions --------------------------------------------------------------------------

# Add the directories this run created to the record of earlier runs.
write_created_dirs() {
  local record
  local -a dirs=()
  record=$(target "${CREATED_DIRS_RECORD}")
  if [[ -r "${record}" ]]; then
    mapfile -t dirs <"${record}"
  fi
  dirs+=("${CREATED_DIRS[@]}")
  if ((${#dirs[@]} == 0)); then
    return 0
  fi
  ensure_content "$(printf '%s\n' "${dirs[@]}" | sort -u)"$'\n' "${CREATED_DIRS_RECORD}" 0644 root root
}

write_staged() {
  if [[ -z "${ROOT}" ]]; then
    return 0
  fi
  local text
  text="# Staged by seccam install.sh --root: what the real system also needs (docs/operations.md)."$'\n'
  text+=$(printf '%s\n' "${STAGED[@]}" | sort -u)
  ensure_content "${text}"$'\n' "${RECORD_DIR}/staged" 0644 root root
}

do_install() {
  if [[ -e "$(target "${PREFIX}")/bin/seccam" ]]; then
    UPGRADE=1
  fi
  install_packages
  check_python
  report_gpio
  ensure_user
  ensure_directories
  install_code
  install_conffiles
  install_units
  write_created_dirs
  write_staged
  start_services
  ensure_camera_key
  run_demo
  summary
}

units_to_remove() {
  {
    unit_names
    local unit
    for unit in "$(target "${PREFIX}")"/lib/systemd/system/*; do
      if [[ -f "${unit}" ]]; then
        printf '%s\n' "${unit##*/}"
      fi
    done
  } | sort -u
}

# Remove the directories an installation created (the record) and the .wants directories of
# our units (an empty one means nothing to systemd; installs older than the record made them
# too), each only when it is empty now. Deepest first, so a parent can become empty in turn.
# Recorded directories that stay (the parents of what a plain --uninstall keeps) stay recorded.
prune_created_dirs() {
  local dir path unit wanted
  local -a dirs=("$@") remaining=() ordered=()
  local -A recorded=()
  for dir in "$@"; do
    recorded[${dir}]=1
  done
  for unit in "${ENABLED_UNITS[@]}"; do
    while IFS= read -r wanted; do
      dirs+=("${UNIT_DIR}/${wanted}.wants")
    done < <(wanted_by "${SRC}/lib/systemd/system/${unit}")
  done
  mapfile -t ordered <<<"$(printf '%s\n' "${dirs[@]}" | sort -ru)"
  for dir in "${ordered[@]}"; do
    path=$(target "${dir}")
    if [[ -n "${dir}" && -d "${path}" && ! -L "${path}" && -z "$(ls -A "${path}")" ]]; then
      run rmdir "${path}"
    elif [[ -n "${recorded[${dir}]:-}" && -d "${path}" ]]; then
      remaining+=("${dir}")
    fi
  done
  if ((PURGE)); then
    return 0  # the record went with RECORD_DIR
  elif ((${#remaining[@]})); then
    ensure_content "$(printf '%s\n' "${remaining[@]}" | sort -u)"$'\n' "${CREATED_DIRS_RECORD}" 0644 root root
  else
    remove_path "${CREATED_DIRS_RECORD}"
  fi
}

do_uninstall() {
  local unit wanted removed=0
  local -a created=()
  if [[ -r "$(target "${CREATED_DIRS_RECORD}")" ]]; then
    mapfile -t created <"$(target "${CREATED_DIRS_RECORD}")"
  fi
  if systemd_running; then
    # shcov: skip-begin - systemd as PID 1 only (the tests run in a container without it)
    for unit in "${ENABLED_UNITS[@]}"; do
      if systemctl is-active --quiet "${unit}"; then
        run systemctl stop "${unit}"
      fi
    done
    # shcov: skip-end
  fi
  while IFS= read -r unit; do
    for wanted in "$(target "${UNIT_DIR}")"/*.wants/"${unit}"; do
      if [[ -L "${wanted}" ]]; then
        run rm -f "${wanted}"
      fi
    done
    if [[ -e "$(target "${UNIT_DIR}/${unit}")" ]]; then
      remove_path "${UNIT_DIR}/${unit}"
      removed=1
    fi
  done < <(units_to_remove)
  if [[ -e "$(target "${UNIT_DIR}/${DROP_IN%/*}")" ]]; then
    remove_path "${UNIT_DIR}/${DROP_IN%/*}"
    removed=1
  fi
  if ((removed)) && systemd_running; then
    run systemctl daemon-reload  # shcov: skip - systemd as PID 1 only (the tests run in a container without it)
  fi
  remove_path "${CRON_FILE}"
  remove_path "${CRON_FILE}.dist"
  remove_path "${RECORD_DIR}/cron.d-seccam.sha256"
  if [[ -L "$(target "${BIN_LINK}")" ]]; then
    remove_path "${BIN_LINK}"
  fi
  remove_path "${PREFIX}"
  if ((PURGE)); then
    warn "--purge: removing the configuration, the spool and the camera key; a new key is a new chat"
    remove_path "${ETC_DIR}"
    remove_path "${SPOOL_DIR}"
    remove_path "${STATE_DIR}"
    remove_path "${RECORD_DIR}"
    if [[ -z "${ROOT}" ]] && getent passwd "${SERVICE_USER}" >/dev/null; then
      run userdel "${SERVICE_USER}"
    fi
  else
    local kept="${ETC_DIR} (configuration), ${STATE_DIR} (the camera key), ${SPOOL_DIR} (spool)"
    NOTES+=("kept: ${kept}, user ${SERVICE_USER}; remove them too with --uninstall --purge")
  fi
  prune_created_dirs "${created[@]}"
  summary
}

summary() {
  local line
  for line in "${NOTES[@]}"; do
    say "note: ${line}"
  done
  for line in "${SKIPPED[@]}"; do
    say "skipped: ${line}"
  done
  if ((CHANGES == 0)) && [[ "${ACTION}" == install ]]; then
    say "nothing to change: seccam is installed and up to date"
  elif ((CHANGES == 0)); then
    say "nothing to change: seccam is not installed"
  elif ((DRY_RUN)); then
    say "dry run: ${CHANGES} change(s) would be made; nothing was changed"
  else
    say "done: ${CHANGES} change(s)"
  fi
  if [[ "${ACTION}" == install ]] && ((${#NEXT_STEPS[@]})); then
    say "next steps:"
    local n=1
    for line in "${NEXT_STEPS[@]}"; do
      say "  ${n}. ${line}"
      n=$((n + 1))
    done
    say "  then: sudo seccam status   (another test alarm: sudo seccam trigger)"
  fi
}

cleanup() {
  if [[ -n "${WORK}" ]]; then
    rm -rf "${WORK}"
  fi
}

main() {
  umask 022
  parse_args "$@"
  SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
  check_system
  check_privilege
  check_tools
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/seccam-install.XXXXXX")
  trap cleanup EXIT
  if [[ -n "${ROOT}" ]]; then
    say "installing into the staging root ${ROOT}"
  fi
  case "${ACTION}" in
    install) do_install ;;
    uninstall) do_uninstall ;;
  esac
}

main "$@"
