#!/bin/sh
# SPDX-License-Identifier: MIT
# rules-bench.sh - rule evaluation speed: messages/s for the shipped rule set on the corpus.
#   tests/bench/rules-bench.sh [build/portcullis] [rounds]
# Runs "portcullis test --bench" (the whole chain of deploy/portcullis.conf, no network, nothing
# delivered) over the SpamAssassin and MIME corpora in ../shared/testdata; skips when absent.
# Once with the shipped rules, once with an empty rule set, so the rules' own cost shows.
bin=${1:-build/portcullis}
rounds=${2:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
data="$root/../shared/testdata"
if [ ! -d "$data/spam/spamassassin" ]; then
    echo "rules-bench: $data absent, skipped"; exit 0
fi
msgs=$(find "$data/spam/spamassassin" "$data/mime" -type f ! -name '*.json' ! -name LICENSE \
       ! -name COPYING ! -name '*.md' -size -2M | sort)
n=$(echo "$msgs" | wc -l)
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
# Rule files are relative to the configuration's directory: point the copy at the originals.
sed -e 's/"relay", "rules"/"relay"/' -e "s|\"rules/|\"$root/rules/|g" "$root/deploy/portcullis.conf" \
    > "$tmp/norules.conf"
cd "$root" || exit 1
echo "rules-bench: $n corpus messages x $rounds rounds"
printf 'shipped rules: '
# shellcheck disable=SC2086
"$bin" test -c deploy/portcullis.conf --bench "$rounds" $msgs 2>/dev/null || exit 1
printf 'no rules:      '
# shellcheck disable=SC2086
"$bin" test -c "$tmp/norules.conf" --bench "$rounds" $msgs 2>/dev/null || exit 1
