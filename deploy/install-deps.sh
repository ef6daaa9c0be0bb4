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
libsystemd-dev publicsuffix libcrypt-dev"
TEST="check postfix swaks redis-server nsd opendkim-tools clang python3 openssl bc
debhelper lintian blhc fakeroot pflogsumm fail2ban python3-prometheus-client haproxy strace
dovecot-core"
case "$1" in
    --run) PKGS="$RUN" ;;
    "") PKGS="$RUN $TEST" ;;
    *) echo "usage: install-deps.sh [--run]" >&2; exit 64 ;;
esac
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
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
