# SPDX-License-Identifier: MIT
# portcullis - SMTP filtering and policy gateway
#
#   make run      install what running needs, build, run on deploy/portcullis.conf
#   make check    install what is missing, build, run every test (unit, ASan+UBSan, end to end)
#   make install  binary, man pages, config and rules, systemd unit (PREFIX, DESTDIR, ...)
#   make package  the Debian package (dpkg-buildpackage); make package-check lints it
#   make bench    throughput, latency and memory against a direct baseline
#   make fuzz     build the libFuzzer targets (clang) and run each for FUZZ_SECONDS
#   make conformance   third-party suites from ../shared/testdata, when present
#
# B is the build directory; SAN=1 builds with AddressSanitizer and UBSan; V=1 shows every
# command. CFLAGS, CPPFLAGS, LDFLAGS and LDLIBS are the builder's (dpkg-buildflags): ours
# are added beside them, never in place of them. WERROR=1 (the default in a git checkout,
# and in make check) turns warnings into errors; packaging builds use WERROR=0 so that a
# newer compiler's new warning does not fail a distribution build.

CC      ?= gcc
B       ?= build
SAN     ?=
V       ?= 0
WERROR  ?= $(if $(wildcard .git),1,0)

# Install layout (GNU names). The configuration lives in $(sysconfdir)/portcullis, which is
# also the binary's default: -c is needed only for another file.
PREFIX      ?= /usr/local
prefix      ?= $(PREFIX)
sbindir     ?= $(prefix)/sbin
datarootdir ?= $(prefix)/share
mandir      ?= $(datarootdir)/man
datadir     ?= $(datarootdir)/portcullis
sysconfdir  ?= /etc
unitdir     ?= $(prefix)/lib/systemd/system
sysusersdir ?= $(prefix)/lib/sysusers.d
tmpfilesdir ?= $(prefix)/lib/tmpfiles.d
DESTDIR     ?=
INSTALL     ?= install
CONFDIR     := $(sysconfdir)/portcullis

# Libraries: only what the code calls. The milter door (gateway/milter.c) needs libmilter,
# which has no pkg-config module: -lmilter below. TLS (gateway/tls.c) needs
# libssl and libevent_openssl; AUTH's password file (gateway/authdb.c) needs libcrypt.
PKGS       := libevent libevent_pthreads libcrypto libssl libevent_openssl libconfuse libunbound \
              hiredis libpcre2-8 gmime-3.0 opendkim libsystemd libxcrypt
EXTRA_LIBS ?=

# A missing -dev package is named here rather than surfacing as a missing header. Targets
# that install the packages (deps, run, check) or need none skip the check.
NOPKG_GOALS := deps run-deps run check bench fuzz clean format spdx-check layers-check package package-check
ifneq ($(MAKECMDGOALS),)
ifeq ($(filter-out $(NOPKG_GOALS),$(MAKECMDGOALS)),)
SKIP_PKGCHECK := 1
endif
endif
ifndef SKIP_PKGCHECK
PKG_MISSING := $(shell for p in $(PKGS); do pkg-config --exists $$p || echo $$p; done)
ifneq ($(strip $(PKG_MISSING)),)
$(error pkg-config cannot find: $(PKG_MISSING) (install the -dev packages: make deps, or deploy/install-deps.sh))
endif
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   ?= -O2 -g
PC_CFLAGS := -std=gnu11 -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror) -I. -D_GNU_SOURCE \
             -DPC_CONFIG_FILE='"$(CONFDIR)/portcullis.conf"' $(PKG_CFLAGS) -MMD -MP
PC_LDFLAGS :=
PC_LIBS    := $(PKG_LIBS) -lspf2 -lopendmarc -lmilter $(EXTRA_LIBS) -lpthread -lm
ifeq ($(SAN),1)
PC_CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1
PC_LDFLAGS += -fsanitize=address,undefined
endif
# Ours first, the builder's last: a later -O or -D wins, so dpkg-buildflags keep the final say.
ALL_CFLAGS  = $(PC_CFLAGS) $(CPPFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(PC_LDFLAGS) $(LDFLAGS)
ALL_LIBS    = $(PC_LIBS) $(LDLIBS)

ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @echo "  $(1)"
endif

LIB_SRCS  := $(filter-out gateway/main.c,$(wildcard lib/*.c core/*.c gateway/*.c filters/*.c policy/*.c rules/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(B)/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
REGR_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(B)/tests/regress_%)
FUZZ_SECONDS ?= 60

.PHONY: all deps run-deps run check unit unit-asan e2e e2e-asan fuzz-regress docs-check bench fuzz \
        conformance format format-check clean install uninstall spdx-check layers-check package package-check

all: $(B)/portcullis

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC      $<)
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/libportcullis.a: $(LIB_OBJS)
	@rm -f $@
	$(call say,AR      $@)
	$(Q)$(AR) rcs $@ $^

$(B)/portcullis: $(B)/gateway/main.o $(B)/libportcullis.a
	$(call say,LD      $@)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LIBS)

$(B)/tests/test_%: tests/unit/test_%.c $(B)/libportcullis.a
	@mkdir -p $(dir $@)
	$(call say,LD      $@)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(B)/libportcullis.a $(ALL_LIBS) $(shell pkg-config --libs check)

# Every fuzz target also builds as a plain program that replays its regression corpus.
$(B)/tests/regress_%: tests/fuzz/%.c tests/fuzz/replay.c $(B)/libportcullis.a
	@mkdir -p $(dir $@)
	$(call say,LD      $@)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< tests/fuzz/replay.c $(B)/libportcullis.a $(ALL_LIBS)

# Conformance checkers (tests/conformance/*.c), built on demand by their suites.
$(B)/tests/conf_%: tests/conformance/%.c $(B)/libportcullis.a
	@mkdir -p $(dir $@)
	$(call say,LD      $@)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(B)/libportcullis.a $(ALL_LIBS)

deps:
	@deploy/install-deps.sh

run-deps:
	@deploy/install-deps.sh --run

# Only what building and running need (no test peers, no clang); never starts a system daemon.
run: run-deps
	@$(MAKE) --no-print-directory all
	@mkdir -p var/Maildir
	PORTCULLIS_RUN_AS_ROOT=1 $(B)/portcullis -c deploy/portcullis.conf

# make install [PREFIX=/usr/local] [DESTDIR=...]: configuration files that already exist at the
# destination are left alone (a postmaster's edits survive a reinstall); the unit, sysusers.d and
# tmpfiles.d files name the installed binary.
install: all
	$(INSTALL) -d $(DESTDIR)$(sbindir) $(DESTDIR)$(mandir)/man5 $(DESTDIR)$(mandir)/man8 \
	    $(DESTDIR)$(CONFDIR)/rules/lists $(DESTDIR)$(unitdir) $(DESTDIR)$(sysusersdir) \
	    $(DESTDIR)$(tmpfilesdir)
	$(INSTALL) -m 755 $(B)/portcullis $(DESTDIR)$(sbindir)/portcullis
	$(INSTALL) -m 644 deploy/portcullis.8 $(DESTDIR)$(mandir)/man8/portcullis.8
	$(INSTALL) -m 644 deploy/portcullis.conf.5 deploy/portcullis.rules.5 $(DESTDIR)$(mandir)/man5/
	@for f in portcullis.conf $(patsubst rules/%,rules/%,$(wildcard rules/*.rules rules/lists/*)); do \
	    src=$$f; [ $$f = portcullis.conf ] && src=deploy/portcullis.conf; \
	    if [ -e $(DESTDIR)$(CONFDIR)/$$f ]; then echo "  keep    $(DESTDIR)$(CONFDIR)/$$f"; \
	    else echo "  install $(DESTDIR)$(CONFDIR)/$$f"; \
	         $(INSTALL) -m 644 $$src $(DESTDIR)$(CONFDIR)/$$f || exit 1; fi; done
	sed 's|/usr/sbin/portcullis|$(sbindir)/portcullis|g; s|/etc/portcullis|$(CONFDIR)|g' \
	    deploy/portcullis.service > $(DESTDIR)$(unitdir)/portcullis.service
	chmod 644 $(DESTDIR)$(unitdir)/portcullis.service
	$(INSTALL) -m 644 deploy/portcullis.sysusers $(DESTDIR)$(sysusersdir)/portcullis.conf
	$(INSTALL) -m 644 deploy/portcullis.tmpfiles $(DESTDIR)$(tmpfilesdir)/portcullis.conf
	$(INSTALL) -d $(DESTDIR)$(datadir)/fail2ban/filter.d $(DESTDIR)$(datadir)/fail2ban/jail.d
	$(INSTALL) -m 644 deploy/fail2ban/filter.d/portcullis.conf $(DESTDIR)$(datadir)/fail2ban/filter.d/
	$(INSTALL) -m 644 deploy/fail2ban/jail.d/portcullis.conf $(DESTDIR)$(datadir)/fail2ban/jail.d/

# make uninstall: everything install put there except the configuration (a postmaster's files).
uninstall:
	rm -f $(DESTDIR)$(sbindir)/portcullis $(DESTDIR)$(mandir)/man8/portcullis.8 \
	    $(DESTDIR)$(mandir)/man5/portcullis.conf.5 $(DESTDIR)$(mandir)/man5/portcullis.rules.5 \
	    $(DESTDIR)$(unitdir)/portcullis.service $(DESTDIR)$(sysusersdir)/portcullis.conf \
	    $(DESTDIR)$(tmpfilesdir)/portcullis.conf
	rm -rf $(DESTDIR)$(datadir)
	@echo "  kept    $(DESTDIR)$(CONFDIR) (remove it by hand if it is no longer wanted)"

# Every tracked source file carries an SPDX-License-Identifier line.
spdx-check:
	@tests/spdx-check.sh

# Formatting is clang-format's job (one .clang-format at the root): a file it would change fails.
format-check:
	@files=$$(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*'); \
	    clang-format --dry-run -Werror $$files && echo "format-check: $$(echo $$files | wc -w) files ok"

# Layers, no circles (STYLE.md lesson 17): no upward include, no include circle. The self-test
# first proves the check can fail.
layers-check:
	@python3 tests/layers-check.py --self-test
	@python3 tests/layers-check.py

# The Debian package, built out of tree into $(B)/deb (reads deploy/debian, see README).
package:
	@tests/package.sh build

# Package checks: contents (dpkg-deb -c), lintian, blhc on the build log.
package-check: package
	@tests/package.sh check

unit: $(UNIT_BINS)
	@tests/run-unit.sh $(UNIT_BINS)

unit-asan:
	@$(MAKE) --no-print-directory B=build-asan SAN=1 WERROR=$(WERROR) unit fuzz-regress

fuzz-regress: $(REGR_BINS)
	@tests/fuzz/run-regress.sh $(REGR_BINS)

e2e: all
	@python3 tests/e2e/run.py --binary $(B)/portcullis

# The same end-to-end tests against the ASan+UBSan gateway: a sanitizer report in its log fails.
e2e-asan:
	@$(MAKE) --no-print-directory B=build-asan SAN=1 WERROR=$(WERROR) all
	@python3 tests/e2e/run.py --binary build-asan/portcullis

docs-check: all
	@tests/docs-check.sh $(B)/portcullis

check: deps
	@$(MAKE) --no-print-directory WERROR=1 all
	@$(MAKE) --no-print-directory WERROR=1 unit fuzz-regress docs-check spdx-check layers-check format-check
	@$(MAKE) --no-print-directory WERROR=1 unit-asan
	@$(MAKE) --no-print-directory WERROR=1 e2e
	@$(MAKE) --no-print-directory WERROR=1 e2e-asan
	@$(MAKE) --no-print-directory package-check

bench: deps
	@$(MAKE) --no-print-directory all
	@tests/bench/bench.sh $(B)/portcullis

fuzz:
	@tests/fuzz/run-fuzz.sh $(FUZZ_SECONDS)

conformance: all
	@tests/conformance/run.sh $(B)

format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz
	rm -rf deploy/debian/.debhelper deploy/debian/portcullis deploy/debian/files

-include $(LIB_OBJS:.o=.d) $(B)/gateway/main.d $(wildcard $(B)/tests/*.d)
