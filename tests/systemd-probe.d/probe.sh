#!/bin/bash
# Runs inside the booted container (probe-for-seccam.service), as root, after multi-user.target.
# Drives every seccam unit the way production does and writes /probe/result (KEY=VALUE lines).
set -uo pipefail

readonly OUT=/probe/result
readonly SINK=/probe/sent
readonly OWNER=owner@probe.test

result() { printf '%s=%s\n' "$1" "$2" >>"${OUT}"; }

wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds
  local until=$((SECONDS + $1))
  shift
  until "$@"; do
    if ((SECONDS >= until)); then return 1; fi
    sleep 0.5
  done
}

sent() { local n; n=$(find "${SINK}" -name '*.eml' | wc -l); ((n >= $1)); }

unit_result() {  # what systemd recorded of UNIT's runs since boot (its journal: a finished oneshot
  # unit nobody references is unloaded, and `systemctl show` forgets it)
  local unit=$1 log
  log=$(journalctl --no-pager -o cat -u "${unit}")
  result "${unit%.service}.ran" "$(grep -c "^${unit}: Deactivated successfully" <<<"${log}")"
  result "${unit%.service}.failed" "$(grep -c "^${unit}: Failed with result" <<<"${log}")"
  result "${unit%.service}.exposure" "$(systemd-analyze security "${unit}" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
}

main() {
  : >"${OUT}"
  mkdir -p "${SINK}"
  result systemd "$(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')"
  /usr/bin/python3 /probe/smtp-sink.py 2525 "${SINK}" &

  # The owner's key, made elsewhere (a person's import, as on a real Pi).
  export GNUPGHOME=/probe/owner
  install -d -m 0700 "${GNUPGHOME}"
  gpg --batch --passphrase '' --quick-gen-key "${OWNER}" ed25519 sign never 2>/dev/null
  local fpr
  fpr=$(gpg --list-keys --with-colons "${OWNER}" | awk -F: '/^fpr/{print $10; exit}')
  gpg --batch --passphrase '' --quick-add-key "${fpr}" cv25519 encr never 2>/dev/null
  gpg --armor --export "${OWNER}" >/probe/owner.asc
  unset GNUPGHOME

  cat >/etc/seccam/seccam.toml <<TOML
[sensors]
warmup_s = 0
[[camera]]
name = "bars"
device = "test"
resolution = "320x240"
[account]
address = "cam@probe.test"
password = "unused"
smtp_host = "127.0.0.1"
smtp_port = 2525
smtp_security = "plain"
timeout_s = 10
[delivery]
recipients = ["${OWNER}"]
TOML
  chown root:seccam /etc/seccam/seccam.toml
  chmod 0640 /etc/seccam/seccam.toml
  seccam keys init >/probe/keys-init.log 2>&1
  result keys_init "$?"
  seccam keys import /probe/owner.asc >/probe/keys-import.log 2>&1
  result keys_import "$?"

  # An alarm as the PIRs record one: seccam-capture.path starts the capture unit (no
  # network, cameras only), which encrypts into the outbox; seccam-send.path starts the
  # send unit. Preview + full image = 2 messages.
  seccam trigger -q
  wait_for 90 sent 2
  result alarm_messages "$(find "${SINK}" -name '*.eml' | wc -l)"
  unit_result seccam-capture.service
  unit_result seccam-send.service

  # cron's way: bin/seccam-job starts the unit.
  /opt/seccam/bin/seccam-job heartbeat
  result heartbeat_job "$?"
  wait_for 90 sent 3
  result messages_after_heartbeat "$(find "${SINK}" -name '*.eml' | wc -l)"
  unit_result seccam-heartbeat.service
  /opt/seccam/bin/seccam-job inbox  # no imap_host: the job says so and exits 0
  result inbox_job "$?"
  unit_result seccam-inbox.service

  # Every message sent is ciphertext only, signed by the camera and readable by the owner.
  gpg --homedir /var/lib/seccam/gnupg --export | GNUPGHOME=/probe/owner gpg --batch --import 2>/dev/null
  local plain=0 ok=0 f
  for f in "${SINK}"/*.eml; do
    if ! grep -q 'multipart/encrypted' "${f}" || grep -q '^Content-Type: image/jpeg' "${f}"; then
      plain=$((plain + 1))
    elif sed -n '/-----BEGIN PGP MESSAGE-----/,/-----END PGP MESSAGE-----/p' "${f}" \
        | GNUPGHOME=/probe/owner gpg --batch --status-fd 1 -d 2>/dev/null | grep -q '^\[GNUPG:\] GOODSIG'; then
      ok=$((ok + 1))
    fi
  done
  result cleartext_messages "${plain}"
  result owner_decrypts "${ok}"

  # The poller on gpiozero's mock pins (there are no GPIO pins here): it must run in its
  # sandbox and keep its liveness stamp fresh.
  mkdir -p /etc/systemd/system/seccam-poller.service.d
  printf '[Service]\nEnvironment=GPIOZERO_PIN_FACTORY=mock\n' >/etc/systemd/system/seccam-poller.service.d/probe.conf
  systemctl daemon-reload
  systemctl restart seccam-poller.service
  if wait_for 60 test -s /var/spool/seccam/state/poller.json; then result poller_stamp yes; else result poller_stamp no; fi
  result poller_active "$(systemctl is-active seccam-poller.service)"
  result poller.exposure "$(systemd-analyze security seccam-poller.service 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
  journalctl --no-pager -u 'seccam-*' >/probe/journal.txt 2>&1
  result finished yes
}

main
systemctl poweroff
