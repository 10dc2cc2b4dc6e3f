# Shared helpers for scripts/*.sh: sourced, not run.

# Installs a Debian package that provides COMMAND when COMMAND is missing:
# directly when root, otherwise stops with the exact command to run.
ensure_apt() {
    local command=$1 package=$2
    command -v "$command" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ]; then
        echo "==> installing $package (provides $command)" >&2
        if ! apt-get install -y -qq "$package" >/dev/null 2>&1; then
            apt-get update -qq >/dev/null && apt-get install -y -qq "$package" >/dev/null
        fi
    else
        echo "error: $command is missing; install it with: sudo apt-get install -y $package" >&2
        exit 1
    fi
}
