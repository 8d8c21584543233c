#!/usr/bin/env bash
# test/run.sh — what `npm test` runs (node's own test runner through tsx, one test file at a time).
#
#   bash test/run.sh            start the test servers (test/support/infra.sh up), source $INFRA_DIR/env,
#                               run every test/**/*.test.ts, stop the servers on exit
#   bash test/run.sh --unit     no servers: only the test files outside test/e2e, test/sources, test/caddyfile, test/deploy,
#                               test/examples, test/support, test/migrate/{migrate,routing} and test/workers/etcd (those need the servers or
#                               Caddy, or the packages and registry access they install with)
#   bash test/run.sh FILE...    only these test files (servers are started unless --unit)
#   --test-*=...                passed to node, e.g. --test-name-pattern=etcd
#
# Environment:
#   TEST_FILTER=REGEX   only test files whose path matches (grep -E), e.g. TEST_FILTER='sources/(etcd|redis)'
#   TEST_TIMEOUT_MS     per-test timeout (default 300000); a test's own { timeout } wins
#   KEEP_INFRA=1        leave the servers running afterwards (faster reruns; `bash test/support/infra.sh down`)
#   INFRA_FRESH=1       wipe the servers' data dirs first (default when CI=true)
#   INFRA_DIR           where the servers keep data, logs and the env file (default /tmp/cdr-infra)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

unit=0
files=()
node_args=()
for a in "$@"; do
  case $a in
    --unit) unit=1 ;;
    --test-*) node_args+=("$a") ;;
    -*) echo "run.sh: unknown option $a" >&2; exit 2 ;;
    *) files+=("$a") ;;
  esac
done

if [ ${#files[@]} -eq 0 ]; then
  mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | LC_ALL=C sort)
fi
if [ "$unit" = 1 ] && [ ${#files[@]} -gt 0 ]; then
  mapfile -t files < <(printf '%s\n' "${files[@]}" | grep -Ev '^(\./)?test/(e2e|sources|support|caddyfile|deploy|examples)/|^(\./)?test/migrate/(migrate|routing)\.test\.ts$|^(\./)?test/workers/etcd\.test\.ts$' || true)
fi
if [ -n "${TEST_FILTER:-}" ] && [ ${#files[@]} -gt 0 ]; then
  mapfile -t files < <(printf '%s\n' "${files[@]}" | grep -E -- "$TEST_FILTER" || true)
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "run.sh: no test files to run (mode: $([ "$unit" = 1 ] && echo unit || echo all)${TEST_FILTER:+, TEST_FILTER=$TEST_FILTER})" >&2
  exit 1
fi

export INFRA_DIR=${INFRA_DIR:-/tmp/cdr-infra}
if [ "$unit" = 0 ]; then
  if [ -z "${KEEP_INFRA:-}" ]; then
    trap 'bash test/support/infra.sh down || echo "run.sh: infra.sh down failed" >&2' EXIT
  fi
  if [ "${INFRA_FRESH:-}" = 1 ] || { [ "${CI:-}" = true ] && [ "${INFRA_FRESH:-}" != 0 ]; }; then
    bash test/support/infra.sh clean
  fi
  bash test/support/infra.sh up
  # shellcheck disable=SC1091
  source "$INFRA_DIR/env"
fi

echo "run.sh: ${#files[@]} test file(s)"
rc=0
node --import tsx --test --test-concurrency=1 --test-timeout="${TEST_TIMEOUT_MS:-300000}" \
  ${node_args[@]+"${node_args[@]}"} "${files[@]}" </dev/null || rc=$?
exit "$rc"
