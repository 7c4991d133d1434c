# Shared by the probes and the preStop hook of a Redis pod (sourced, POSIX sh).
# redis-cli over TLS as a named ACL user; the password is read from its mounted Secret
# on every call, so a rotated password is picked up without a restart.
: "${REDIS_PORT:=6379}"
: "${TLS_CA:=/etc/redis-platform/tls/ca.crt}"
: "${TLS_CERT:=/etc/redis-platform/tls/tls.crt}"
: "${TLS_KEY:=/etc/redis-platform/tls/tls.key}"
: "${USERS_DIR:=/etc/redis-platform/users}"

# rcli USER HOST PORT COMMAND...
rcli() {
    _user=$1 _host=$2 _port=$3
    shift 3
    REDISCLI_AUTH=$(cat "$USERS_DIR/$_user/password") redis-cli --tls \
        --cacert "$TLS_CA" --cert "$TLS_CERT" --key "$TLS_KEY" \
        --user "$_user" -h "$_host" -p "$_port" "$@"
}
