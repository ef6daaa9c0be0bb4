#!/bin/sh
# install-deps.sh - install the Debian 12 packages portcullis builds, runs and tests with.
# Idempotent: only what is missing is installed. Needs root (or sudo) the first time.
set -e
PKGS="build-essential pkg-config libevent-dev libssl-dev libconfuse-dev libunbound-dev
libspf2-dev libopendkim-dev libopendmarc-dev libmilter-dev libhiredis-dev libpcre2-dev
libgmime-3.0-dev check postfix swaks redis-server nsd opendkim-tools clang python3 openssl bc strace"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Postfix asks what kind of mail system this is; we only need its programs.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
