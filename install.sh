#!/bin/bash
# seccam installer -- placeholder.
#
# The real installer (user, directories, /opt/seccam, units, /etc/cron.d/seccam)
# is the install issue's work. Until then this only says so and exits 64, so
# that nobody mistakes a silent exit 0 for a finished installation.
set -euo pipefail

readonly PROG=install.sh
readonly EX_USAGE=64

say() {
  printf '%s\n' "$*" >&2
}

not_implemented() {
  say "seccam: ${PROG} is not implemented yet (see the install issue); run the demo with: ./bin/seccam demo"
  return "${EX_USAGE}"
}

main() {
  not_implemented "$@"
}

main "$@"
