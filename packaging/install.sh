#!/bin/sh
# Installs centinela from a source tree as a systemd service, e.g. on a Raspberry Pi
# (the Debian package, built by .ci/deb.sh, installs the same files):
#
#   cargo build --release
#   sudo packaging/install.sh                      # binary from target/release/centinela
#   sudo packaging/install.sh path/to/centinela    # or a given binary (a cross build)
#   sudo packaging/install.sh --uninstall          # remove it; keep config and data
#   sudo packaging/install.sh --uninstall --purge  # remove config, data and the user too
#
# What it does, each step only when needed (running it again upgrades the binary and
# the unit, and keeps your configuration and secrets):
#   /usr/bin/centinela                       the binary (0755)
#   user and group "centinela"               a system account without login or home
#   /etc/centinela/centinela.toml            the annotated default config, only if absent;
#                                            when a broker already listens on port 1883
#                                            (Mosquitto), set to use it (mode = "external")
#   /etc/centinela/centinela.env             secrets for systemd, mode 600, only if absent
#   /var/lib/centinela                       the SQLite database lives here
#   /lib/systemd/system/centinela.service    then daemon-reload and enable --now; your
#                                            changes go in a drop-in (systemctl edit
#                                            centinela) under /etc, kept across upgrades
#   /usr/share/man/man1/centinela.1.gz, shell completions, /usr/share/doc/centinela
#
# DESTDIR=/some/dir stages the same files under that directory and touches nothing
# else: no user, no ownership changes, no systemctl (for packaging and tests).
# CENTINELA_BROKER_PORT (default 1883) is the port checked for an existing broker.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
dest=${DESTDIR:-}
port=${CENTINELA_BROKER_PORT:-1883}

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

uninstall=no
purge=no
bin=""
for arg in "$@"; do
    case "$arg" in
        --uninstall) uninstall=yes ;;
        --purge) purge=yes ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        -*) die "unknown option $arg (see --help)" ;;
        *) bin=$arg ;;
    esac
done
[ "$purge" = no ] || [ "$uninstall" = yes ] || die "--purge goes with --uninstall"
bin=${bin:-$here/target/release/centinela}

if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or set DESTDIR for a staged install"
fi
systemd_here() { [ -z "$dest" ] && [ -d /run/systemd/system ]; }

unit="$dest/lib/systemd/system/centinela.service"
old_unit="$dest/etc/systemd/system/centinela.service"
man="$dest/usr/share/man/man1/centinela.1.gz"
bash_completion="$dest/usr/share/bash-completion/completions/centinela"
zsh_completion="$dest/usr/share/zsh/vendor-completions/_centinela"
fish_completion="$dest/usr/share/fish/vendor_completions.d/centinela.fish"
doc="$dest/usr/share/doc/centinela"

if [ "$uninstall" = yes ]; then
    if systemd_here; then
        systemctl disable --now centinela 2>/dev/null || true
        say "stopped and disabled centinela"
    fi
    for f in "$dest/usr/bin/centinela" "$unit" "$man" "$bash_completion" "$zsh_completion" \
        "$fish_completion"; do
        if [ -e "$f" ]; then
            rm -f "$f"
            say "removed $f"
        fi
    done
    if [ -d "$doc" ]; then
        rm -rf "$doc"
        say "removed $doc"
    fi
    if systemd_here; then
        systemctl daemon-reload
    fi
    if [ "$purge" = yes ]; then
        rm -rf "$dest/etc/centinela" "$dest/var/lib/centinela"
        say "removed $dest/etc/centinela and $dest/var/lib/centinela (configuration, secrets, database)"
        if [ -z "$dest" ] && getent passwd centinela >/dev/null 2>&1; then
            userdel centinela 2>/dev/null || true
            if getent group centinela >/dev/null 2>&1; then
                groupdel centinela 2>/dev/null || true
            fi
            say "removed the user and group centinela"
        fi
    else
        say "kept $dest/etc/centinela and $dest/var/lib/centinela (configuration, secrets, database);" \
            "--uninstall --purge removes them"
    fi
    exit 0
fi

[ -f "$bin" ] || die "no binary at $bin (build it with: cargo build --release, or give its path)"

# Whether something listens on TCP port $1 (any address): ss when there, else the
# kernel's tables (state 0A is LISTEN; ports are hex).
listening() {
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return 0
        return 1
    fi
    hex=$(printf '%04X' "$1")
    for t in /proc/net/tcp /proc/net/tcp6; do
        [ -r "$t" ] || continue
        awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 }
            END { exit !found }' "$t" && return 0
    done
    return 1
}

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
    if listening "$port"; then
        # A Pi that already runs Mosquitto (Zigbee2MQTT, Home Assistant): the embedded
        # broker could not bind the port, so read from the one that is there.
        awk -v url="mqtt://127.0.0.1:$port" '
            !done && /^mode = "embedded"/ {
                print "mode = \"external\"                    # set by install.sh: a broker already listened on the port"
                print "url = \"" url "\""
                done = 1
                next
            }
            { print }' "$tmp" >"$tmp.ext" && mv "$tmp.ext" "$tmp"
        say "a broker already listens on port $port: the new configuration reads from it" \
            "(mode = \"external\", url = \"mqtt://127.0.0.1:$port\") instead of starting its own"
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

# 6. The unit, where packages put theirs; an admin's settings live in drop-ins.
install -D -m 0644 "$here/systemd/centinela.service" "$unit"
say "installed $unit"
if [ -f "$old_unit" ]; then
    # An earlier install put the unit in /etc, where it would hide the new one.
    mv "$old_unit" "$old_unit.old"
    say "moved the unit an earlier install left in $old_unit to $old_unit.old" \
        "(put your own settings in: systemctl edit centinela)"
fi

# 7. Man page, completions, documentation (generated by the binary when it runs here).
install -d -m 0755 "$doc"
for f in README.md LICENSE-MIT LICENSE-APACHE CHANGELOG.md; do
    if [ -f "$here/$f" ]; then
        install -m 0644 "$here/$f" "$doc/$f"
    fi
done
if "$bin" man >/dev/null 2>&1; then
    install -d -m 0755 "$(dirname "$man")"
    "$bin" man | gzip -9n >"$man"
    chmod 0644 "$man"
    for shell in bash zsh fish; do
        case $shell in
            bash) f=$bash_completion ;;
            zsh) f=$zsh_completion ;;
            fish) f=$fish_completion ;;
        esac
        install -d -m 0755 "$(dirname "$f")"
        "$bin" completions "$shell" >"$f"
        chmod 0644 "$f"
    done
    say "installed the man page (man centinela) and bash, zsh and fish completions"
else
    say "$bin does not run here: man page and completions not installed"
fi

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
