# Throw-away PostgreSQL and SeaweedFS servers on free loopback ports, each
# with its state in a folder, to be sourced: scripts/with-test-services starts
# both around the test run, scripts/services lets a test stop and restart them
# (the outage trial). Every function takes the folder as $1; the servers keep
# their ports and data across a stop and start.

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# initdb refuses to run as root: use Debian's postgres account then.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# PostgreSQL, plain and TLS on the same port (the certificate names 127.0.0.1
# only). Writes $1/pg.env.
pg_init() {
  local dir=$1
  [ -x "$pg_bin/postgres" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; return 1; }
  mkdir -p "$dir/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pg"
  as_pg "$pg_bin/initdb" -D "$dir/pg/data" -A trust -U postgres --no-sync >/dev/null
  local tls="$dir/pg-tls"
  mkdir -p "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=custos test PostgreSQL CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/pg/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls/ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 2 -extfile "$tls/ext" -out "$dir/pg/server.crt" 2>/dev/null
  chmod 600 "$dir/pg/server.key"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pg/server.key" "$dir/pg/server.crt"
  free_port >"$dir/pg/port"
  {
    echo "CUSTOS_TEST_POSTGRES_URL='postgres://postgres@127.0.0.1:$(cat "$dir/pg/port")/postgres'"
    echo "CUSTOS_TEST_POSTGRES_CA='$tls/ca.pem'"
  } >"$dir/pg.env"
}

pg_start() {
  local dir=$1
  as_pg "$pg_bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w \
    -o "-p $(cat "$dir/pg/port") -c listen_addresses=127.0.0.1 -k $dir/pg -c max_connections=200 -c ssl=on -c ssl_cert_file=$dir/pg/server.crt -c ssl_key_file=$dir/pg/server.key" start >/dev/null
}

pg_stop() {
  as_pg "$pg_bin/pg_ctl" -D "$1/pg/data" -m fast stop >/dev/null 2>&1 || true
}

# SeaweedFS with S3 on loopback only, no telemetry, credentials required, and
# a bucket `custos-test`. Writes $1/weed.env (KEY='value' lines, as pg.env).
weed_init() {
  local dir=$1
  mkdir -p "$dir/weed/data"
  local key secret
  key="custos-test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  cat >"$dir/weed/s3.json" <<JSON
{"identities":[{"name":"custos","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  # SeaweedFS also listens on each port + 10000 (gRPC): pick ports whose
  # +10000 twin is free too, both below the kernel's ephemeral range (32768
  # up): the outage test restarts SeaweedFS on the same ports, and a client
  # connection given one of them as its local port meanwhile made the restart
  # fail ("bind: address already in use" on a gRPC port in that range).
  python3 - >"$dir/weed/ports" <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
ports = []
while len(ports) < 4:
    p = random.randint(20000, 22767)
    if p not in ports and p + 10000 not in ports and free(p) and free(p + 10000):
        ports.append(p)
print(*ports)
PY
  local s3_port
  s3_port=$(cut -d' ' -f4 "$dir/weed/ports")
  {
    echo "CUSTOS_TEST_S3_URL='s3://custos-test?endpoint=http://127.0.0.1:$s3_port&region=us-east-1'"
    echo "AWS_ACCESS_KEY_ID='$key'"
    echo "AWS_SECRET_ACCESS_KEY='$secret'"
  } >"$dir/weed.env"
}

weed_start() {
  local dir=$1 m_port v_port f_port s3_port
  read -r m_port v_port f_port s3_port <"$dir/weed/ports"
  (cd "$dir/weed" && exec weed server -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -dir="$dir/weed/data" \
    -master.port="$m_port" -volume.port="$v_port" -filer.port="$f_port" -volume.max=10 \
    -s3 -s3.port="$s3_port" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$dir/weed/s3.json" >>"$dir/weed/log" 2>&1) &
  echo $! >"$dir/weed/pid"
  local pid ready=no
  pid=$(cat "$dir/weed/pid")
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || break
    local out
    out=$(echo "s3.bucket.create -name custos-test" | timeout 10 weed shell -master="127.0.0.1:$m_port" 2>&1 || true)
    case "$out" in *"created bucket"*|*"already exist"*) ready=yes; break ;; esac
    sleep 0.5
  done
  # The S3 gateway comes up after the filer: wait until it answers.
  for _ in $(seq 60); do
    [ "$ready" = yes ] || break
    (exec 3<>"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && return 0
    sleep 0.5
  done
  echo "SeaweedFS did not start:" >&2
  tail -20 "$dir/weed/log" >&2
  return 1
}

# Killed, as by a crash: a graceful stop takes SeaweedFS ~25 s, and what it
# acknowledged is in its volume files already (a killed process loses nothing
# the kernel has).
weed_stop() {
  local pid
  pid=$(cat "$1/weed/pid" 2>/dev/null) || return 0
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true # reaped quietly when it is this shell's child
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$1/weed/pid"
}
