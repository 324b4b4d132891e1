#!/usr/bin/env bash
# Makes a private CA and a server certificate for localhost / 127.0.0.1 in DIR (the demo's
# and the appliance tests' certificates; never for production). Idempotent: existing files
# younger than a day are kept.
set -euo pipefail
dir=${1:?usage: demo_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
if [[ -f server.pem && -n $(find server.pem -mmin -1380) ]]; then exit 0; fi
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
{
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=qbridge-demo-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,IP:198.18.0.2\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl req "${ec[@]}" -keyout server.key -out server.csr -subj /CN=localhost
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -out server.pem -extfile server.ext
} > openssl.log 2>&1
