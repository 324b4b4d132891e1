#!/bin/sh
# Runs a DPDK test binary and, only when the run died inside DPDK 22.11's memif PMD (it
# dereferences NULL on EAL's interrupt thread now and then: docs/status.md), runs it once
# more and says so. A crash there is a run killed by a signal, or a sanitizer's SEGV report,
# with librte_net_memif on the printed stack (the test prints its stack on SIGSEGV). A run
# with a failed check (gtest's "Failure" or "[  FAILED  ]"), or any other crash, is never
# retried. Exit 77 (skipped) passes through.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
attempt=1
while :; do
  "$@" >"$log" 2>&1
  rc=$?
  cat "$log"
  [ "$rc" -eq 0 ] && exit 0
  crashed=no
  if grep -q "librte_net_memif" "$log" && ! grep -q -e "^\[  FAILED  \]" -e ": Failure$" "$log"; then
    if [ "$rc" -gt 128 ] || grep -q "Sanitizer: SEGV" "$log"; then crashed=yes; fi
  fi
  if [ "$crashed" = yes ] && [ "$attempt" -eq 1 ]; then
    echo "retry_pmd_crash: $1 crashed in librte_net_memif (exit $rc); running it once more" >&2
    attempt=2
    continue
  fi
  exit "$rc"
done
