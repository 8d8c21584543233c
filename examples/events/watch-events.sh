#!/bin/sh
# Follows the sidecar's event stream with curl: one "event:"/"data:" pair per event, as the server sends them.
#   sh examples/events/watch-events.sh [events]     e.g. config_updated,route_missed (default: all)
# ADMIN (default http://127.0.0.1:2021) and DYNAMIC_LB_ADMIN_TOKEN (when the admin API has a token) are read from the environment.
set -eu
admin=${ADMIN:-http://127.0.0.1:2021}
url="$admin/dynamic-lb/events${1:+?events=$1}"
if [ -n "${DYNAMIC_LB_ADMIN_TOKEN:-}" ]; then
  exec curl -sN -H "Authorization: Bearer $DYNAMIC_LB_ADMIN_TOKEN" "$url"
fi
exec curl -sN "$url"
