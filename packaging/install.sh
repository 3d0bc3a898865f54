#!/bin/sh
# Installs centinela as a systemd service, e.g. on a Raspberry Pi:
#
#   cargo build --release
#   sudo packaging/install.sh                      # binary from target/release/centinela
#   sudo packaging/install.sh path/to/centinela    # or a given binary (a cross build)
#
# What it does, each step only when needed (running it again upgrades the binary and
# the unit, and keeps your configuration and secrets):
#   /usr/bin/centinela                       the binary (0755)
#   user and group "centinela"               a system account without login or home
#   /etc/centinela/centinela.toml            the annotated default config, only if absent
#   /etc/centinela/centinela.env             secrets for systemd, mode 600, only if absent
#   /var/lib/centinela                       the SQLite database lives here
#   /etc/systemd/system/centinela.service    then daemon-reload and enable --now
#
# DESTDIR=/some/dir stages the same files under that directory and touches nothing
# else: no user, no ownership changes, no systemctl (for packaging and tests).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release/centinela}
dest=${DESTDIR:-}

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

[ -f "$bin" ] || die "no binary at $bin (build it with: cargo build --release, or give its path)"
if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or set DESTDIR for a staged install"
fi

# 1. The binary.
install -D -m 0755 "$bin" "$dest/usr/bin/centinela"
say "installed $dest/usr/bin/centinela"

# 2. The system user.
if [ -z "$dest" ]; then
    if getent passwd centinela >/dev/null 2>&1; then
        say "user centinela exists"
    else
        nologin=/usr/sbin/nologin
        [ -x "$nologin" ] || nologin=/bin/false
        useradd --system --user-group --no-create-home --home-dir /var/lib/centinela \
            --shell "$nologin" --comment "centinela IoT monitoring" centinela
        say "created system user centinela"
    fi
else
    say "staged install: user centinela not created"
fi

# Ownership only on a real install.
own() {
    if [ -z "$dest" ]; then
        chown "$1" "$2"
    fi
}

# 3. Configuration: never overwrite what is there.
install -d -m 0750 "$dest/etc/centinela"
own root:centinela "$dest/etc/centinela"
config="$dest/etc/centinela/centinela.toml"
if [ -e "$config" ]; then
    say "kept existing $config"
else
    tmp=$(mktemp)
    # The binary prints its embedded default; a binary for another architecture cannot
    # run here, so fall back to the same file in the source tree.
    if ! "$bin" config >"$tmp" 2>/dev/null || [ ! -s "$tmp" ]; then
        [ -f "$here/config/centinela.toml" ] || die "cannot run $bin config and no config/centinela.toml"
        cp "$here/config/centinela.toml" "$tmp"
    fi
    install -m 0640 "$tmp" "$config"
    rm -f "$tmp"
    own root:centinela "$config"
    say "wrote the default configuration to $config"
fi

# 4. Secrets, read by systemd as root before the service starts: root only.
envfile="$dest/etc/centinela/centinela.env"
if [ -e "$envfile" ]; then
    chmod 0600 "$envfile"
    say "kept existing $envfile (mode 600)"
else
    install -m 0600 "$here/systemd/centinela.env" "$envfile"
    say "wrote $envfile (mode 600): put passwords and tokens there"
fi
own root:root "$envfile"

# 5. State: the SQLite database.
install -d -m 0750 "$dest/var/lib/centinela"
own centinela:centinela "$dest/var/lib/centinela"

# 6. The unit.
install -D -m 0644 "$here/systemd/centinela.service" "$dest/etc/systemd/system/centinela.service"
say "installed $dest/etc/systemd/system/centinela.service"

if [ -n "$dest" ]; then
    say "staged install in $dest: systemctl not run"
elif [ ! -d /run/systemd/system ]; then
    say "systemd is not running here: start it later with: systemctl enable --now centinela"
else
    was_active=no
    if systemctl is-active --quiet centinela; then
        was_active=yes
    fi
    systemctl daemon-reload && systemctl enable --now centinela
    if [ "$was_active" = yes ]; then
        # enable --now leaves a running service alone: restart it on the new binary.
        systemctl restart centinela
    fi
    say "centinela is enabled and started: systemctl status centinela; journalctl -u centinela"
fi
