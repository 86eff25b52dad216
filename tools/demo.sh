#!/usr/bin/env bash
# The CryptoAPI "storing a session key" procedure, end to end, on a fresh temporary home with
# the directory store; then the procedure's own attack (a substituted blob) being refused.
# Run it with `make demo`.  Nothing outside a temporary folder is touched.
set -euo pipefail

work=$(mktemp -d "${TMPDIR:-/tmp}/keyblob-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
export KEYBLOB_HOME="$work/victim" KEYBLOB_PASSPHRASE="demo passphrase (use a real one)"
unset KEYBLOB_STORE KEYBLOB_CONTAINER

step() { printf '\n## %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "1. Create a container: an exchange key pair and a signature key pair, sealed at rest"
run keyblob init
step "2. Export: make a session key, wrap it under the exchange key, sign the blob, store it"
run keyblob new payroll
step "3. The stored blob, field by field (no secret needed to look)"
run keyblob inspect "$KEYBLOB_HOME/blobs/payroll/1.kb"
step "4. Load and import: signer trusted, signature valid, name and generation right, then unwrap"
run keyblob show payroll
run keyblob export payroll -o "$work/payroll.kb"
run keyblob verify "$work/payroll.kb"

step "5. Use the key: encrypt a sample with it, then decrypt (the key is found from the header)"
printf 'name,salary\nalice,100\nbob,90\n' > "$work/salaries.csv"
run keyblob encrypt payroll -i "$work/salaries.csv" -o "$work/salaries.csv.kb"
run keyblob decrypt -i "$work/salaries.csv.kb" -o "$work/salaries.out.csv"
run cmp "$work/salaries.csv" "$work/salaries.out.csv"
echo "decrypted copy is identical"

step "6. The attack: someone with write access to the disk makes their own key, wraps it"
echo "   under the victim's public exchange key (public keys are public) and swaps the blob"
run keyblob pubkey -o "$work/victim.pub"
run keyblob --home "$work/attacker" init
run keyblob --home "$work/attacker" --store "$work/evil" new payroll --to "$work/victim.pub"
run cp "$work/evil/payroll/1.kb" "$KEYBLOB_HOME/blobs/payroll/1.kb"
step "7. The victim loads the key: refused before anything is unwrapped (exit status 3)"
set +e
run keyblob show payroll
status=$?
set -e
echo "exit status: $status"
if [ "$status" -ne 3 ]; then
    echo "demo failed: the substituted blob was not refused" >&2
    exit 1
fi
step "Done: the substituted key was refused; the victim never used it."
