# shellcheck shell=bash
# TLS material of the local stack (sourced by deploy/local/stack, never run).
#
# On the first `up`, tls_ensure makes, under $TLS_DIR (.stack/tls):
#   ca.key  ca.crt          a private CA (key mode 600), 10 years
#   server.key server.crt   a server certificate signed by it, SANs
#                           IP:127.0.0.1 and DNS:localhost, for PostgreSQL,
#                           Neo4j (HTTPS) and the broker's SSL listener
#   kafka.key kafka.pem     the server key encrypted (PKCS#8) and a PEM
#                           keystore (encrypted key + chain) for Kafka,
#                           whose file-based PEM keystore wants a key password
# The password of kafka.key is $SECRETS/kafka_ssl_key.pw. Existing files are
# kept, so a second `up` changes nothing; `reset` wipes them with the rest.
# Everything comes from Debian's openssl; nothing here prints a secret.

TLS_DIR=$STACK/tls
TLS_CA=$TLS_DIR/ca.crt
TLS_CERT=$TLS_DIR/server.crt
TLS_KEY=$TLS_DIR/server.key
TLS_KAFKA_KEYSTORE=$TLS_DIR/kafka.pem
TLS_KAFKA_KEY_PW_FILE=$SECRETS/kafka_ssl_key.pw

# tls_run WHAT CMD...: run an openssl command; on failure show its output
# and stop `up`.
tls_run() {
    local what=$1 out
    shift
    if ! out=$("$@" 2>&1 </dev/null); then
        printf '%s\n' "$out" >&2
        stack_die "tls: could not $what (openssl output above)"
    fi
}

tls_make_ca() {
    stack_info "tls: creating the stack CA in $TLS_DIR"
    (
        umask 077
        tls_run "create the CA" openssl req -x509 -new -newkey rsa:2048 -noenc -sha256 \
            -days 3650 -subj "/CN=nexus-sync local stack CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$TLS_DIR/ca.key.tmp" -out "$TLS_DIR/ca.crt.tmp"
        chmod 600 "$TLS_DIR/ca.key.tmp"
        chmod 644 "$TLS_DIR/ca.crt.tmp"
        mv "$TLS_DIR/ca.key.tmp" "$TLS_DIR/ca.key"
        mv "$TLS_DIR/ca.crt.tmp" "$TLS_CA"
    )
}

tls_make_server_cert() {
    local ext=$TLS_DIR/server.ext
    stack_info "tls: issuing the server certificate (127.0.0.1, localhost)"
    cat >"$ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
EOF
    (
        umask 077
        tls_run "create the server key" openssl req -new -newkey rsa:2048 -noenc \
            -subj "/CN=localhost" -keyout "$TLS_DIR/server.key.tmp" \
            -out "$TLS_DIR/server.csr"
        tls_run "sign the server certificate" openssl x509 -req -sha256 -days 825 \
            -in "$TLS_DIR/server.csr" -CA "$TLS_CA" -CAkey "$TLS_DIR/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -extfile "$ext" \
            -out "$TLS_DIR/server.crt.tmp"
        chmod 644 "$TLS_DIR/server.crt.tmp"
        rm -f "$TLS_DIR/server.csr" "$TLS_KAFKA_KEYSTORE" "$TLS_DIR/kafka.key"
        mv "$TLS_DIR/server.key.tmp" "$TLS_KEY"
        mv "$TLS_DIR/server.crt.tmp" "$TLS_CERT"
    )
}

# Kafka's file-based PEM keystore: encrypted PKCS#8 key, then the chain.
# PBES1 (SHA1 + 3DES), because Java 17 has no SecretKeyFactory for the
# PBES2 scheme openssl uses by default. The key is mode 600 in the clear
# beside it anyway; the password is only what the keystore format wants.
tls_make_kafka_keystore() {
    secret_get "$TLS_KAFKA_KEY_PW_FILE" >/dev/null
    (
        umask 077
        tls_run "encrypt the Kafka key" openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES \
            -in "$TLS_KEY" -passout "file:$TLS_KAFKA_KEY_PW_FILE" \
            -out "$TLS_DIR/kafka.key"
        cat "$TLS_DIR/kafka.key" "$TLS_CERT" "$TLS_CA" >"$TLS_KAFKA_KEYSTORE.tmp"
        mv "$TLS_KAFKA_KEYSTORE.tmp" "$TLS_KAFKA_KEYSTORE"
    )
}

# tls_ensure: the CA, the server certificate and the Kafka keystore, each
# made only when missing (a new CA reissues the certificate).
tls_ensure() {
    command -v openssl >/dev/null 2>&1 || stack_die "openssl not found; run: deploy/local/stack install"
    mkdir -p "$TLS_DIR"
    chmod 755 "$TLS_DIR"
    if [ ! -s "$TLS_DIR/ca.key" ] || [ ! -s "$TLS_CA" ]; then
        tls_make_ca
        rm -f "$TLS_CERT" "$TLS_KEY"
    fi
    if [ ! -s "$TLS_CERT" ] || [ ! -s "$TLS_KEY" ]; then
        tls_make_server_cert
    fi
    if [ ! -s "$TLS_KAFKA_KEYSTORE" ] || [ ! -s "$TLS_KAFKA_KEY_PW_FILE" ]; then
        tls_make_kafka_keystore
    fi
}

# tls_pg_install DATA_DIR: copies of the certificate and key in the data
# directory, owned by the server's user with mode 600 (PostgreSQL refuses a
# key that others can read).
tls_pg_install() {
    local data=$1
    install -m 600 "$TLS_CERT" "$data/server.crt"
    install -m 600 "$TLS_KEY" "$data/server.key"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$data/server.crt" "$data/server.key"
    fi
}

# tls_pg_config: the lines nexus.conf gains. Plain connections keep working
# (pg_hba's `host` lines match both); a client asks for TLS by sslmode.
tls_pg_config() {
    cat <<'EOF'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
EOF
}

# tls_neo4j_config HOME PORT: HTTPS next to HTTP, with the stack's
# certificate (Neo4j 5 ssl policy "https"); copies the files under HOME.
tls_neo4j_config() {
    local port=$2 dir=$1/certificates/https
    mkdir -p "$dir/trusted" "$dir/revoked"
    install -m 600 "$TLS_KEY" "$dir/private.key"
    install -m 644 "$TLS_CERT" "$dir/public.crt"
    install -m 644 "$TLS_CA" "$dir/trusted/ca.crt"
    cat <<EOF
server.https.enabled=true
server.https.listen_address=127.0.0.1:$port
server.https.advertised_address=127.0.0.1:$port
dbms.ssl.policy.https.enabled=true
dbms.ssl.policy.https.base_directory=$dir
dbms.ssl.policy.https.private_key=private.key
dbms.ssl.policy.https.public_certificate=public.crt
dbms.ssl.policy.https.client_auth=NONE
EOF
}

# tls_kafka_config PORT: an SSL listener beside PLAINTEXT (the broker's own
# traffic stays on PLAINTEXT), no client certificates.
tls_kafka_config() {
    cat <<EOF
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_KAFKA_KEYSTORE
ssl.key.password=$(cat "$TLS_KAFKA_KEY_PW_FILE")
ssl.client.auth=none
EOF
}

# tls_check_running: warn about servers that run without their TLS side,
# because a script without TLS support started them and `up` keeps running
# servers as they are. Clients can still use the plain ports meanwhile.
tls_check_running() {
    local stale=()
    [ "$(pg_psql postgres -tAc 'SHOW ssl' 2>/dev/null)" = on ] || stale+=(pg)
    port_open "$KAFKA_SSL_PORT" || stale+=(kafka)
    port_open "$NEO4J_HTTPS_PORT" || stale+=(neo4j)
    if [ "${#stale[@]}" -gt 0 ]; then
        stack_warn "running without TLS (started before TLS support?): ${stale[*]}; run: deploy/local/stack down, then up"
    fi
}
