#!/bin/sh
# Every admin endpoint once, each answer under a "## METHOD path" heading.
#   sh examples/admin-api/admin.sh
# ADMIN (default http://127.0.0.1:2021) and DYNAMIC_LB_ADMIN_TOKEN are read from the environment.
set -eu
admin=${ADMIN:-http://127.0.0.1:2021}
auth="Authorization: Bearer ${DYNAMIC_LB_ADMIN_TOKEN:-}"

call() { # METHOD PATH
  printf '## %s %s\n' "$1" "$2"
  curl -sS --fail-with-body -X "$1" -H "$auth" "$admin$2"
  printf '\n'
}

call GET /dynamic-lb/routes                                   # cached routes: source, key, upstreams, rule_count
call GET /dynamic-lb/stats                                    # hits and misses per key, cache hit rate
call GET /dynamic-lb/health                                   # each source: healthy, config_count, last_error, last_sync
call GET /dynamic-lb/policies                                 # the policies as configured
call GET '/dynamic-lb/explain?key=tenant-b&header=X-Version:%20v2'   # dry run: the decision /select would make
call GET /dynamic-lb/cache                                    # route cache: entries, hit_rate, per source
call DELETE /dynamic-lb/cache                                 # drop the caches; every source re-reads its store
call GET /readyz                                              # 200 once every source finished its initial load
