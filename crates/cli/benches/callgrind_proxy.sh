#!/bin/bash
# Instructions per request of `modelauth proxy`, counted by callgrind: the proxy (BIN, a
# release build) in front of nginx returning a static model list, loaded by
# `modelauth bench --concurrency 8`; the difference between a run of 2,200 requests and
# one of 200, divided by 2,000. Needs valgrind and nginx on PATH. Unlike a timing, the
# figure does not move with the machine's load: run it for two builds and compare.
#
#   crates/cli/benches/callgrind_proxy.sh target/release/modelauth
set -euo pipefail
BIN="$(realpath "$1")"
D="$(mktemp -d)"
trap 'kill "$(cat "$D/nginx.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$D"' EXIT
cat > "$D/nginx.conf" <<NGINX
worker_processes 1;
pid $D/nginx.pid;
error_log $D/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18080; location / { default_type application/json; return 200 '{"object":"list","data":[]}'; } } }
NGINX
nginx -c "$D/nginx.conf"
printf '#!/bin/sh\necho tok-callgrind-0123456789\n' > "$D/token.sh"
chmod +x "$D/token.sh"
printf '[model_providers.corp]\nname = "Corp"\nbase_url = "http://127.0.0.1:18080/v1"\nauth = { command = "%s/token.sh" }\n' "$D" > "$D/proxy.toml"
printf 'model_provider = "p"\n[model_providers.p]\nname = "P"\nbase_url = "http://127.0.0.1:18585/corp"\n' > "$D/client.toml"

# Total instructions of the proxy process for N requests.
instructions() {
    rm -f "$D/cg.out" "$D/proxy.out"
    valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" \
        "$BIN" --config "$D/proxy.toml" --no-shared-cache proxy --listen 127.0.0.1:18585 \
        > "$D/proxy.out" 2> "$D/valgrind.err" &
    local proxy=$!
    for _ in $(seq 1 300); do grep -q listening "$D/proxy.out" 2>/dev/null && break; sleep 0.1; done
    "$BIN" --config "$D/client.toml" --no-shared-cache bench --requests "$1" --concurrency 8 > /dev/null
    kill -TERM "$proxy"
    wait "$proxy" || true
    grep -E '^(summary|totals):' "$D/cg.out" | head -n 1 | awk '{print $2}'
}
small=$(instructions 200)
large=$(instructions 2200)
echo "instructions per request: $(( (large - small) / 2000 ))"
