#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# run-fuzz.sh SECONDS [TARGET...] - build every libFuzzer target (tests/fuzz/fuzz_*.c) with clang,
# ASan and UBSan into build-fuzz/, run each for SECONDS on a corpus seeded from
# tests/fuzz/regress/NAME/ and tests/fuzz/seeds/NAME/, and copy every crash, leak or timeout
# input into tests/fuzz/regress/NAME/ so that make check replays it from then on.
# The library objects go into an archive, as in the Makefile: a target that includes a source
# file to reach its static functions (fuzz_spfrecord includes filters/spf.c) must not also get
# that file's object, or the link fails on duplicate symbols.
set -uo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-60}; shift || true
OUT=build-fuzz
PKGS="libevent libevent_pthreads libcrypto libssl libevent_openssl libxcrypt libconfuse libunbound hiredis libpcre2-8 gmime-3.0 opendkim libsystemd"
CFLAGS="-g -O1 -std=gnu11 -D_GNU_SOURCE -I. $(pkg-config --cflags $PKGS) -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
LIBS="$(pkg-config --libs $PKGS) -lspf2 -lopendmarc -lmilter -lpthread -lm"
mkdir -p "$OUT/obj"
objs=()
for src in $(ls lib/*.c core/*.c gateway/*.c filters/*.c policy/*.c rules/*.c 2>/dev/null | grep -v gateway/main.c); do
    o="$OUT/obj/${src//\//_}.o"
    if [ ! -e "$o" ] || [ "$src" -nt "$o" ]; then
        clang $CFLAGS -c -o "$o" "$src" || exit 1
    fi
    objs+=("$o")
done
rm -f "$OUT/libportcullis.a"
ar rcs "$OUT/libportcullis.a" "${objs[@]}" || exit 1
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=($(ls tests/fuzz/fuzz_*.c | sed 's|tests/fuzz/fuzz_||; s|\.c$||'))
rc=0
for name in "${targets[@]}"; do
    bin="$OUT/fuzz_$name"
    clang $CFLAGS -fsanitize=fuzzer -o "$bin" "tests/fuzz/fuzz_$name.c" "$OUT/libportcullis.a" $LIBS || { echo "fuzz $name: build failed"; rc=1; continue; }
    corpus="$OUT/corpus-$name"; mkdir -p "$corpus" "tests/fuzz/regress/$name"
    cp -n tests/fuzz/regress/"$name"/* tests/fuzz/seeds/"$name"/* "$corpus"/ 2>/dev/null
    arts="$OUT/artifacts-$name/"; mkdir -p "$arts"
    echo "fuzz $name for ${SECONDS_EACH}s"
    PC_FUZZ_QUIET=1 "$bin" -max_total_time="$SECONDS_EACH" -timeout=20 -max_len=8192 \
        -artifact_prefix="$arts" "$corpus" > "$OUT/fuzz-$name.log" 2>&1
    grep -E '^Done|#[0-9]+.*DONE' "$OUT/fuzz-$name.log" | tail -1
    for a in "$arts"*; do
        [ -e "$a" ] || continue
        cp "$a" "tests/fuzz/regress/$name/"
        echo "fuzz $name: kept $(basename "$a") as a regression input"; rc=1
    done
done
exit $rc
