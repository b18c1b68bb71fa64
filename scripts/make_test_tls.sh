#!/usr/bin/env bash
# Remake the TLS test fixtures of tests/data/tls (a test CA, a node certificate it signed, and a self-signed "rogue"
# one), valid for 100 years. TEST ONLY: the private keys are public in the repository; never use them for a real node.
set -euo pipefail
out="${1:-$(dirname "$0")/../tests/data/tls}"
mkdir -p "$out"
cd "$out"
ext=$(mktemp)
trap 'rm -f "$ext" node.csr' EXIT
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' > "$ext"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 36500 -subj "/CN=DeepWML test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj "/CN=localhost" 2>/dev/null
openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out node.pem -days 36500 -extfile "$ext" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.pem -days 36500 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
rm -f ca.srl ca.key  # nothing more is ever signed with it
echo "wrote $(pwd): ca.pem node.pem node.key rogue.pem rogue.key"
