#!/bin/sh
# SPDX-License-Identifier: MIT
# install-deps.sh [--run] - install the Debian 12 packages portcullis builds, runs and tests with.
# With --run, only what building and running need ("make run"): no test peers, no clang, no
# packaging tools. Idempotent: only what is missing is installed. Needs root (or sudo) the
# first time. No system daemon is started by the installation: a policy-rc.d forbidding it is
# put in place for the duration when none exists.
set -e
RUN="build-essential pkg-config libevent-dev libssl-dev libconfuse-dev libunbound-dev
libspf2-dev libopendkim-dev libopendmarc-dev libhiredis-dev libpcre2-dev libgmime-3.0-dev
libsystemd-dev publicsuffix libcrypt-dev libmilter-dev"
TEST="check postfix swaks redis-server nsd opendkim-tools clang clang-format python3 openssl bc
debhelper lintian blhc fakeroot pflogsumm fail2ban python3-prometheus-client haproxy strace
dovecot-core dovecot-lmtpd libidn12 libmariadb3 testssl.sh opendkim miltertest"
case "$1" in
    --run) PKGS="$RUN" ;;
    "") PKGS="$RUN $TEST" ;;
    *) echo "usage: install-deps.sh [--run]" >&2; exit 64 ;;
esac
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing"
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# portcullis install-deps.sh: no service starts while packages install\nexit 101\n' |
            $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        policy=yes
        trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # Postfix asks what kind of mail system this is; we only need its programs.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
[ "$1" = "--run" ] && exit 0
# Exim 4.96 for the e2e tests (a sending MTA and a backend). exim4 conflicts with postfix as an
# installed package, so it is only downloaded and unpacked into a cache that
# tests/e2e/harness.py (EximInstance) runs it from; libidn12 above is its one library that
# postfix does not pull in. The Debian-exim user it is built for is created as its package would.
EXIM_CACHE="${PC_EXIM_CACHE:-/var/cache/portcullis/exim}"
if [ ! -x "$EXIM_CACHE/root/usr/sbin/exim4" ]; then
    echo "install-deps: downloading exim4-daemon-light exim4-base into $EXIM_CACHE"
    $SUDO mkdir -p "$EXIM_CACHE"
    (cd "$EXIM_CACHE" && $SUDO apt-get download exim4-daemon-light exim4-base)
    for deb in "$EXIM_CACHE"/exim4-*.deb; do $SUDO dpkg-deb -x "$deb" "$EXIM_CACHE/root"; done
fi
# The PROXY protocol (hosts_proxy, for backend identity = "proxy") is only in Debian's heavy
# build; libmariadb3 above is the one library it needs beyond the light one's.
EXIM_HEAVY="${PC_EXIM_HEAVY_CACHE:-/var/cache/portcullis/exim-heavy}"
if [ ! -x "$EXIM_HEAVY/root/usr/sbin/exim4" ]; then
    echo "install-deps: downloading exim4-daemon-heavy into $EXIM_HEAVY"
    $SUDO mkdir -p "$EXIM_HEAVY"
    (cd "$EXIM_HEAVY" && $SUDO apt-get download exim4-daemon-heavy)
    for deb in "$EXIM_HEAVY"/exim4-*.deb; do $SUDO dpkg-deb -x "$deb" "$EXIM_HEAVY/root"; done
fi
getent passwd Debian-exim >/dev/null ||
    $SUDO useradd -r -M -d /nonexistent -s /usr/sbin/nologin -U Debian-exim
exit 0
