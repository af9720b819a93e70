#!/bin/sh
# Entrypoint of the mktn images (run under tini).
#
# 1. Checks that the data and artifact directories ($MKTN_DATA, $MKTN_ARTIFACTS)
#    exist and are writable by this (non-root) user: a volume owned by root is the
#    usual first failure, and this names it and the fix instead of a traceback later.
# 2. If $MKTN_WAIT_FOR_URL is set, waits (up to $MKTN_WAIT_TIMEOUT s, default 120)
#    for that URL to answer 2xx, e.g. the Prefect API's /health on another host,
#    where compose's depends_on cannot reach.
# 3. Execs the command (default: mktn --help).
set -eu

check_dir() {
    name=$1
    dir=$2
    [ -n "$dir" ] || return 0
    mkdir -p "$dir" 2>/dev/null || true
    if [ ! -d "$dir" ] || [ ! -w "$dir" ]; then
        echo "mktn-entrypoint: $name=$dir is not a writable directory for uid $(id -u);" \
             "fix: chown -R $(id -u):$(id -g) the volume or bind mount behind it," \
             "or point $name at a writable path" >&2
        exit 73
    fi
}

check_dir MKTN_DATA "${MKTN_DATA:-}"
check_dir MKTN_ARTIFACTS "${MKTN_ARTIFACTS:-}"

if [ -n "${MKTN_WAIT_FOR_URL:-}" ]; then
    python "${MKTN_HEALTHCHECK:-/usr/local/bin/mktn-healthcheck}" \
        --url "$MKTN_WAIT_FOR_URL" --wait "${MKTN_WAIT_TIMEOUT:-120}"
fi

if [ "$#" -eq 0 ]; then
    set -- mktn --help
fi
exec "$@"
