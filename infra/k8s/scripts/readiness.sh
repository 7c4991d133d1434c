#!/bin/sh
# Readiness: serve clients only when the node answers, the cluster is ok, and a replica
# is in sync with its primary (a rolling update waits for that before the next pod).
. "$(dirname "$0")/lib.sh"
reply=$(rcli monitoring 127.0.0.1 "$REDIS_PORT" ping 2>&1)
if [ "$reply" != PONG ]; then
    echo "readiness: ping: $reply"
    exit 1
fi
case "$(rcli monitoring 127.0.0.1 "$REDIS_PORT" cluster info 2>&1)" in
    *cluster_state:ok*) ;;
    *)
        echo "readiness: cluster_state is not ok"
        exit 1
        ;;
esac
replication=$(rcli monitoring 127.0.0.1 "$REDIS_PORT" info replication 2>&1 | tr -d '\r')
case "$replication" in
    *role:slave*)
        case "$replication" in
            *master_link_status:up*) ;;
            *)
                echo "readiness: replica not in sync with its primary"
                exit 1
                ;;
        esac
        ;;
esac
exit 0
