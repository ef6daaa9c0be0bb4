# portcullis - SMTP filtering and policy gateway
#
#   make run      install what is missing, build, run on deploy/portcullis.conf
#   make check    install what is missing, build, run every test (unit, ASan+UBSan, end to end)
#   make bench    throughput, latency and memory against a direct baseline
#   make fuzz     build the libFuzzer targets (clang) and run each for FUZZ_SECONDS
#   make conformance   third-party suites from ../shared/testdata, when present
#
# B is the build directory; SAN=1 builds with AddressSanitizer and UBSan.

CC      ?= gcc
B       ?= build
SAN     ?=
PKGS    := libevent libevent_openssl libevent_pthreads openssl libconfuse libunbound \
           hiredis libpcre2-8 gmime-3.0 opendkim libsystemd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -I. -D_GNU_SOURCE $(PKG_CFLAGS) -MMD -MP
LDLIBS  += $(PKG_LIBS) -lspf2 -lopendmarc -lmilter -lpthread -lm
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1
LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRCS  := $(filter-out gateway/main.c,$(wildcard lib/*.c gateway/*.c filters/*.c policy/*.c rules/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(B)/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
REGR_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(B)/tests/regress_%)
FUZZ_SECONDS ?= 60

.PHONY: all deps run check unit unit-asan e2e e2e-asan fuzz-regress docs-check bench fuzz conformance format clean

all: $(B)/portcullis

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

$(B)/libportcullis.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/portcullis: $(B)/gateway/main.o $(B)/libportcullis.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/test_%: tests/unit/test_%.c $(B)/libportcullis.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libportcullis.a $(LDLIBS) $(shell pkg-config --libs check)

# Every fuzz target also builds as a plain program that replays its regression corpus.
$(B)/tests/regress_%: tests/fuzz/%.c tests/fuzz/replay.c $(B)/libportcullis.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< tests/fuzz/replay.c $(B)/libportcullis.a $(LDLIBS)

# Conformance checkers (tests/conformance/*.c), built on demand by their suites.
$(B)/tests/conf_%: tests/conformance/%.c $(B)/libportcullis.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libportcullis.a $(LDLIBS)

deps:
	@deploy/install-deps.sh

run: deps all
	@mkdir -p var/Maildir
	$(B)/portcullis -c deploy/portcullis.conf

unit: $(UNIT_BINS)
	@tests/run-unit.sh $(UNIT_BINS)

unit-asan:
	@$(MAKE) --no-print-directory B=build-asan SAN=1 unit fuzz-regress

fuzz-regress: $(REGR_BINS)
	@tests/fuzz/run-regress.sh $(REGR_BINS)

e2e: all
	@python3 tests/e2e/run.py --binary $(B)/portcullis

# The same end-to-end tests against the ASan+UBSan gateway: a sanitizer report in its log fails.
e2e-asan:
	@$(MAKE) --no-print-directory B=build-asan SAN=1 all
	@python3 tests/e2e/run.py --binary build-asan/portcullis

docs-check: all
	@tests/docs-check.sh $(B)/portcullis

check: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit fuzz-regress docs-check
	@$(MAKE) --no-print-directory unit-asan
	@$(MAKE) --no-print-directory e2e
	@$(MAKE) --no-print-directory e2e-asan

bench: deps all
	@tests/bench/bench.sh $(B)/portcullis

fuzz:
	@tests/fuzz/run-fuzz.sh $(FUZZ_SECONDS)

conformance: all
	@tests/conformance/run.sh $(B)

format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJS:.o=.d) $(B)/gateway/main.d
