#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# package.sh build|check - the Debian package, built out of tree.
#   build  copy the tracked tree into $B/deb/portcullis-VERSION/, add deploy/debian as debian/,
#          run dpkg-buildpackage -us -uc -b there; the build log is $B/deb/build.log.
#   check  the .deb's contents (dpkg-deb -c), lintian (fails on errors; warnings are shown),
#          blhc on the build log (fails on any missing hardening flag).
# Building out of tree keeps the work tree free of debian/ and of dpkg-buildpackage's
# leftovers, and builds exactly the tracked files (plus uncommitted edits to them).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${B:-build}/deb
VERSION=$(dpkg-parsechangelog -l deploy/debian/changelog -S Version)
SRC=$OUT/portcullis-${VERSION%-*}

build() {
    rm -rf "$OUT"
    mkdir -p "$SRC"
    if git rev-parse --git-dir >/dev/null 2>&1; then
        git ls-files -z | xargs -0 cp -P --parents -t "$SRC"
    else
        tar --exclude=./build --exclude='./build-*' -cf - . | tar -xf - -C "$SRC"
    fi
    cp -r deploy/debian "$SRC/debian"
    echo "package: dpkg-buildpackage -us -uc -b in $SRC (log: $OUT/build.log)"
    if ! (cd "$SRC" && dpkg-buildpackage -us -uc -b) > "$OUT/build.log" 2>&1; then
        tail -40 "$OUT/build.log"
        echo "package: dpkg-buildpackage failed"
        exit 1
    fi
    ls "$OUT"/*.deb
}

check() {
    local deb rc=0
    deb=$(ls "$OUT"/portcullis_*.deb | head -1)
    dpkg-deb -c "$deb" | awk '{print $6}' > "$OUT/contents"
    for f in ./usr/sbin/portcullis ./etc/portcullis/portcullis.conf \
        ./etc/portcullis/rules/default.rules ./lib/systemd/system/portcullis.service \
        ./usr/lib/sysusers.d/portcullis.conf ./usr/lib/tmpfiles.d/portcullis.conf \
        ./usr/share/man/man8/portcullis.8.gz ./usr/share/man/man5/portcullis.conf.5.gz \
        ./usr/share/doc/portcullis/copyright; do
        grep -qx "$f" "$OUT/contents" || { echo "package: $f missing from $deb"; rc=1; }
    done
    dpkg-deb -I "$deb" postinst | grep -q systemd-sysusers ||
        { echo "package: postinst does not create the system user"; rc=1; }
    dpkg-deb -I "$deb" postinst | grep -q 'deb-systemd-helper' ||
        { echo "package: postinst does not enable the unit"; rc=1; }
    # The unit's ExecStartPre, on the packaged files: the shipped configuration and rules check
    # from / (the unit's working directory is /var/lib/portcullis, never /etc/portcullis).
    rm -rf "$OUT/root"
    dpkg-deb -x "$deb" "$OUT/root"
    local root
    root=$(cd "$OUT/root" && pwd)
    (cd / && "$root/usr/sbin/portcullis" -t -c "$root/etc/portcullis/portcullis.conf") ||
        { echo "package: the packaged configuration does not pass -t"; rc=1; }
    echo "package: lintian $deb"
    lintian --fail-on error --info "$deb" | tee "$OUT/lintian.log" || rc=1
    echo "package: lintian: $(grep -c '^E:' "$OUT/lintian.log" || true) errors," \
        "$(grep -c '^W:' "$OUT/lintian.log" || true) warnings"
    echo "package: blhc $OUT/build.log"
    blhc --bindnow "$OUT/build.log" | tee "$OUT/blhc.log" || rc=1
    [ -s "$OUT/blhc.log" ] || echo "package: blhc: clean"
    [ $rc -eq 0 ] && echo "package: ok"
    return $rc
}

case "${1:-}" in
    build) build ;;
    check) check ;;
    *) echo "usage: package.sh build|check" >&2; exit 64 ;;
esac
