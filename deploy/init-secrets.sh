#!/usr/bin/env sh
# Create what compose.yaml mounts as secrets, once, on the host:
#   deploy/secrets/{executor,orchestrator,executor-sign}.{key,pub}  (deployctl keys init)
#   deploy/secrets/ssh_key                            (executors' SSH key for remote hosts)
# Existing files are kept. The directory is git-ignored.
set -eu
cd "$(dirname "$0")/.."
dir=deploy/secrets
deployctl=${DEPLOYCTL:-}
if [ -z "$deployctl" ]; then
    if [ -x .venv/bin/deployctl ]; then deployctl=.venv/bin/deployctl; else deployctl=deployctl; fi
fi
"$deployctl" keys init --dir "$dir"
if [ ! -f "$dir/ssh_key" ]; then
    ssh-keygen -q -t ed25519 -N '' -C deploystream-executor -f "$dir/ssh_key"
    echo "created $dir/ssh_key (add $dir/ssh_key.pub to the target hosts' authorized_keys)"
fi
# The key files are 0600: the containers must run as their owner to read them.
echo "run: DEPLOYSTREAM_UID=$(id -u) docker compose up -d --build   (or put DEPLOYSTREAM_UID in .env)"
