#!/bin/sh
# Start redis-server (the Redis container's entry point; arguments pass through).
#
# A primary that crashed and comes back before its replica took over (faster than
# node-timeout, as a container restart easily is) returns as the primary with only what
# its AOF held, and its replica resynchronises from it: writes acknowledged to clients
# are lost. So a node that nodes.conf says was a primary holding slots, with at least one
# replica, waits HOLD_SECONDS (about twice node-timeout) first: the replica is elected,
# and this node rejoins as its replica. Replicas and fresh nodes start at once.
: "${DATA_DIR:=/data}"
: "${HOLD_SECONDS:=0}"
conf="$DATA_DIR/nodes.conf"
if [ "$HOLD_SECONDS" -gt 0 ] && [ -f "$conf" ]; then
    # <id> <addr> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
    me=$(awk '$3 ~ /myself/ && $3 ~ /master/ && NF > 8 { print $1 }' "$conf")
    if [ -n "$me" ] && awk -v me="$me" '$4 == me { found = 1 } END { exit !found }' "$conf"; then
        echo "start: this node was a primary with replicas; waiting ${HOLD_SECONDS}s so one takes over"
        sleep "$HOLD_SECONDS"
    fi
fi
exec redis-server "$@"
