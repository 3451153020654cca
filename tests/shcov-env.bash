# shellcheck shell=bash
# Bash line coverage without dependencies (see tests/shcov.py for the report).
#
# bash sources the file named by $BASH_ENV before it runs a script (not for
# interactive shells), so with BASH_ENV=tests/shcov-env.bash and
# SECCAM_SHCOV_DIR=DIR every bash script started by a test writes an xtrace of
# itself to its own file DIR/trace.PID.RANDOM, with one record per executed
# simple command: \x1f...\x1f BASH_SOURCE \x1f LINENO \x1f command
# (bash repeats the first \x1f once per subshell level). The trace goes to a
# separate descriptor (BASH_XTRACEFD), so the script's stderr stays as it was.
# tests/helpers/shell.py sets both variables; tests/run sets SECCAM_SHCOV_DIR.
if [[ -n "${SECCAM_SHCOV_DIR:-}" && -d "${SECCAM_SHCOV_DIR}" ]]; then
  if exec {__seccam_shcov_fd}>>"${SECCAM_SHCOV_DIR}/trace.$$.${RANDOM}${RANDOM}"; then
    # Relative BASH_SOURCE paths are relative to the directory we started in.
    printf '\x1fSHCOV-CWD\x1f%s\n' "${PWD}" >&"${__seccam_shcov_fd}"
    BASH_XTRACEFD=${__seccam_shcov_fd}
    # shellcheck disable=SC2016  # expanded by bash for each traced command
    PS4=$'\x1f''${BASH_SOURCE[0]-}'$'\x1f''${LINENO}'$'\x1f'' '
    set -x
  fi
fi
