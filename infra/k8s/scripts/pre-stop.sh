#!/bin/sh
# preStop: a primary hands its role to its most up-to-date replica before Kubernetes
# sends SIGTERM, so clients see a graceful failover (well under a second) instead of
# node-timeout plus an election. Replicas and primaries without a replica just stop.
# Never fails the hook: the pod stops either way.
. "$(dirname "$0")/lib.sh"
: "${HANDOFF_TIMEOUT:=20}"
: "${AOF_WAIT_TIMEOUT:=15}"
# A server still writing its first AOF (a replica right after a full sync) refuses SIGTERM
# ("Writing initial AOF, can't exit") and would be killed at the end of the grace period:
# let the rewrite finish first, for a bounded time.
steps=$((AOF_WAIT_TIMEOUT * 5))
while [ "$steps" -gt 0 ]; do
    case "$(rcli operator 127.0.0.1 "$REDIS_PORT" info persistence 2>&1 | tr -d '\r')" in
        *aof_rewrite_in_progress:1* | *aof_rewrite_scheduled:1*) ;;
        *) break ;;
    esac
    [ "$steps" -eq $((AOF_WAIT_TIMEOUT * 5)) ] && echo "pre-stop: waiting for the AOF rewrite"
    sleep 0.2
    steps=$((steps - 1))
done
info=$(rcli operator 127.0.0.1 "$REDIS_PORT" info replication 2>&1 | tr -d '\r')
case "$info" in
    *role:master*) ;;
    *)
        echo "pre-stop: not a primary: nothing to hand off"
        exit 0
        ;;
esac
# slaveN:ip=10.8.1.7,port=6379,state=online,offset=1234,lag=0 -> "ip port offset"
best=$(printf '%s\n' "$info" |
    sed -n 's/^slave[0-9]*:ip=\([^,]*\),port=\([0-9]*\),state=online,offset=\([0-9]*\).*/\1 \2 \3/p' |
    sort -k3,3nr | head -n 1)
if [ -z "$best" ]; then
    echo "pre-stop: no replica online: stopping without a handoff"
    exit 0
fi
set -- $best
echo "pre-stop: asking $1:$2 to take over"
reply=$(rcli operator "$1" "$2" cluster failover 2>&1)
if [ "$reply" != OK ]; then
    echo "pre-stop: CLUSTER FAILOVER refused: $reply"
    exit 0
fi
steps=$((HANDOFF_TIMEOUT * 5))
while [ "$steps" -gt 0 ]; do
    case "$(rcli operator 127.0.0.1 "$REDIS_PORT" info replication 2>&1)" in
        *role:slave*)
            echo "pre-stop: handed off to $1:$2"
            exit 0
            ;;
    esac
    sleep 0.2
    steps=$((steps - 1))
done
echo "pre-stop: $1:$2 did not take over within ${HANDOFF_TIMEOUT}s; stopping anyway"
exit 0
