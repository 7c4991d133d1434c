#!/bin/sh
# Liveness (and startup): the server answers at all. LOADING (a large AOF or RDB),
# MASTERDOWN and BUSY mean alive but busy; restarting the pod would only make it worse.
. "$(dirname "$0")/lib.sh"
reply=$(rcli monitoring 127.0.0.1 "$REDIS_PORT" ping 2>&1)
case "$reply" in
    PONG | *LOADING* | *MASTERDOWN* | *BUSY*) exit 0 ;;
esac
echo "liveness: unexpected reply: $reply"
exit 1
