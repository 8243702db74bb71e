# shellcheck shell=bash
# Shared bash helpers for deploy/local/stack (sourced, never run).
#
# Messages follow the project's wording: lower case, what failed and why,
# one line, prefixed with the program name. Nothing here prints a secret.

STACK_PROG=${STACK_PROG:-stack}

stack_info() { printf '%s: %s\n' "$STACK_PROG" "$*" >&2; }
stack_warn() { printf '%s: warning: %s\n' "$STACK_PROG" "$*" >&2; }
stack_die() {
    printf '%s: error: %s\n' "$STACK_PROG" "$*" >&2
    exit 1
}

# now_ms: milliseconds since the epoch (for timing messages).
now_ms() { date +%s%3N; }

# wait_for TIMEOUT_S PID WHAT CMD...: run CMD every half second until it
# succeeds. Returns 1 after TIMEOUT_S seconds, at once when PID (a process
# we started; "-" for none) has died, so a crash is not mistaken for slowness,
# and at once when a failing CMD has set WAIT_ABORT (to the reason), its way
# of saying that waiting cannot help. CMD runs in this shell with its output
# discarded. On failure WAIT_FOR_REASON says why, for the caller.
# shellcheck disable=SC2034
wait_for() {
    local timeout=$1 pid=$2 what=$3 rc
    shift 3
    local deadline=$(($(date +%s) + timeout))
    WAIT_ABORT=""
    while :; do
        rc=0
        "$@" >/dev/null 2>&1 || rc=$?
        if [ "$rc" -eq 0 ]; then
            return 0
        fi
        if [ -n "$WAIT_ABORT" ]; then
            WAIT_FOR_REASON=$WAIT_ABORT
            return 1
        fi
        if [ "$pid" != - ] && ! kill -0 "$pid" 2>/dev/null; then
            WAIT_FOR_REASON="process $pid exited while waiting for $what"
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            WAIT_FOR_REASON="timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

# pid_matches PID MARKER: true when PID is alive and its command line contains
# MARKER (a path under the stack directory), so a recycled pid is never taken
# for one of ours.
pid_matches() {
    local pid=$1 marker=$2 cmdline
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    case "$cmdline" in
    *"$marker"*) return 0 ;;
    *) return 1 ;;
    esac
}

# stop_pid PID SIGNAL TIMEOUT_S: send SIGNAL, wait up to TIMEOUT_S for the
# process to go, then SIGKILL it. Returns once it is gone.
stop_pid() {
    local pid=$1 sig=$2 timeout=$3 i
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < timeout * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    stack_warn "pid $pid ignored SIG$sig for ${timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    stack_warn "pid $pid survived SIGKILL"
    return 1
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# gen_password: 24 random characters from [A-Za-z0-9], safe in any quoting.
gen_password() {
    local pw=""
    while [ "${#pw}" -lt 24 ]; do
        pw+=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    done
    printf '%s' "${pw:0:24}"
}

# secret_get NAME FILE: print the password stored in FILE, creating it
# (mode 600) with a fresh one the first time.
secret_get() {
    local file=$1
    if [ ! -s "$file" ]; then
        (umask 077 && gen_password >"$file.tmp" && mv "$file.tmp" "$file")
    fi
    cat "$file"
}

# sha_of FILE...: one sha256 over the files' contents.
sha_of() { cat "$@" | sha256sum | cut -c1-64; }

# pom_property POM NAME: the value of <NAME> in a pom's <properties>.
pom_property() {
    sed -n "s:.*<$2>\([^<]*\)</$2>.*:\1:p" "$1" | head -n 1
}

# java_major [JAVA]: the feature version of a java binary (8, 11, 17, ...),
# or nothing when it does not run.
java_major() {
    local v
    v=$("${1:-java}" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
    [ -n "$v" ] || return 0
    case "$v" in
    1.*) v=${v#1.} ;;
    esac
    printf '%s\n' "${v%%[.+-]*}"
}

# --- stop/start of one component (fault tests) --------------------------------
# `stack stop COMPONENT` stops one server the way `down` would (PostgreSQL in
# fast mode, the JVMs with SIGTERM); `stack start COMPONENT` is `up`, which
# starts only what is down, waits until it is ready, restarts the connector's
# failed tasks and waits for Debezium's replication stream. These use the
# functions of deploy/local/stack, so they only run from there.

stack_component_check() {
    case "${1:-}" in
    pg | kafka | connect | neo4j) ;;
    *) stack_die "expected a component (pg, kafka, connect, neo4j), got '${1:-}'" ;;
    esac
}

cmd_stop_one() {
    stack_component_check "${1:-}"
    [ -d "$STACK" ] || return 0
    exec 9>"$STACK/lock"
    flock -w 900 9 || stack_die "another stack command holds $STACK/lock"
    comp_pid "$1" >/dev/null || stack_info "$1: not running"
    stop_component "$1"
}

cmd_start_one() {
    stack_component_check "${1:-}"
    cmd_up
}
