# wsgate: one non-recursive Makefile. Objects and binaries live under build/.
#   make            build build/wsgate and build/wsgatectl
#   make run        install missing packages, build, start a gateway on 127.0.0.1:8080
#   make test       install missing packages, build, run every test from zero
#   make SANITIZE=1 build under build/asan/ with ASan and UBSan
#   make V=1        echo the commands

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build

PKGS_LIBS := libevent hiredis jansson openssl libjwt zlib

# --version prints these: the release and the git revision the binary was built from.
VERSION := 0.4.0
GIT_REV := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell \
             git diff --quiet HEAD -- 2>/dev/null || echo -dirty)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wpointer-arith -Wwrite-strings -Wundef -Wvla -Wimplicit-fallthrough -Wconversion
BASE_CFLAGS := -std=c11 -O2 -g -D_GNU_SOURCE $(WARN) -MMD -MP

ifeq ($(SANITIZE),1)
BUILD := build/asan
BASE_CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDSAN := -fsanitize=address,undefined
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS_LIBS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS_LIBS) 2>/dev/null)

ALL_CFLAGS = $(BASE_CFLAGS) $(PKG_CFLAGS) -I. $(CFLAGS)
ALL_LDFLAGS = $(LDSAN) $(LDFLAGS)

ifeq ($(V),1)
Q :=
else
Q := @
endif

COMMON_SRC := $(sort $(wildcard common/*.c))
WORKER_SRC := $(sort $(wildcard worker/*.c))
WSGATE_SRC := gateway/wsgate.c gateway/master.c
CTL_SRC    := gateway/wsgatectl.c
UNIT_SRC   := $(sort $(wildcard tests/unit/*.c))
BENCH_SRC  := tests/bench/wsload.c
FUZZ_SRC   := $(sort $(wildcard tests/fuzz/fuzz_*.c))

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

COMMON_OBJ := $(call obj,$(COMMON_SRC))
WORKER_OBJ := $(call obj,$(WORKER_SRC))
WSGATE_OBJ := $(call obj,$(WSGATE_SRC))
CTL_OBJ    := $(call obj,$(CTL_SRC))
UNIT_OBJ   := $(call obj,$(UNIT_SRC))

PROGS := $(BUILD)/wsgate $(BUILD)/wsgatectl

.PHONY: FORCE all clean install run test unit deps deps-test deps-node deps-bench check-layout bench \
        bench-smoke bench-scale fuzz fuzz-smoke
all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

# Rewritten only when the version or revision changes, so nothing else rebuilds.
$(BUILD)/gen/version.h: FORCE
	@mkdir -p $(dir $@)
	@printf '#define WSGATE_VERSION "%s"\n#define WSGATE_GIT_REV "%s"\n' '$(VERSION)' \
	   '$(GIT_REV)' > $@.tmp; cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(WSGATE_OBJ) $(CTL_OBJ): $(BUILD)/gen/version.h
$(WSGATE_OBJ) $(CTL_OBJ): ALL_CFLAGS += -I$(BUILD)/gen

FORCE:

# The demo page served at / is compiled into the binary as a C string.
$(BUILD)/gen/demo_html.c: worker/demo.html
	@mkdir -p $(dir $@)
	@{ echo '#include <stddef.h>'; echo 'const char demo_html[] ='; \
	   sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; \
	   echo ';'; echo 'const size_t demo_html_len = sizeof(demo_html) - 1;'; } > $@

$(BUILD)/gen/demo_html.o: $(BUILD)/gen/demo_html.c
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(filter-out -Wmissing-prototypes,$(ALL_CFLAGS)) -c -o $@ $<

$(BUILD)/wsgate: $(WSGATE_OBJ) $(WORKER_OBJ) $(COMMON_OBJ) $(BUILD)/gen/demo_html.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/wsgatectl: $(CTL_OBJ) $(COMMON_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# The benchmark load generator (tests/bench/), built on common/'s codec.
$(BUILD)/wsload: $(call obj,$(BENCH_SRC)) $(COMMON_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# The benchmarks' Redis publisher and subscriber (tests/bench/wsredis.c), libc only.
$(BUILD)/wsredis: $(BUILD)/tests/bench/wsredis.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^

# libFuzzer targets for common/'s parsers, built with clang and its sanitizers.
FUZZ_CC    ?= clang
FUZZ_FLAGS := -std=c11 -g -O1 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=all
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))

build/fuzz/%: tests/fuzz/%.c $(COMMON_SRC) $(wildcard common/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) $(PKG_CFLAGS) -o $@ $< $(COMMON_SRC) $(PKG_LIBS)

# The unit runner wraps the allocator, so tests can fail any allocation (chaos.c).
CHAOS_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup

# worker/outq and worker/registry are pure code too: their unit tests link them alone.
$(BUILD)/unit_tests: $(UNIT_OBJ) $(COMMON_OBJ) $(BUILD)/worker/outq.o $(BUILD)/worker/registry.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) $(CHAOS_WRAP) -o $@ $^ $(PKG_LIBS)

-include $(COMMON_OBJ:.o=.d) $(WORKER_OBJ:.o=.d) $(WSGATE_OBJ:.o=.d) $(CTL_OBJ:.o=.d) $(UNIT_OBJ:.o=.d) \
         $(patsubst %.c,$(BUILD)/%.d,$(BENCH_SRC) tests/bench/wsredis.c)

clean:
	rm -rf build

install: $(PROGS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(PROGS) $(DESTDIR)$(PREFIX)/bin/

# --- packages -------------------------------------------------------------------------------
# Debian packages the build needs, and the ones the tests add. A missing one is installed with
# apt-get when we are root; otherwise the exact command to run is printed and make stops.
DEB_BUILD := gcc make pkg-config libevent-dev libhiredis-dev libjansson-dev libssl-dev libjwt-dev zlib1g-dev \
             redis-server
DEB_TEST  := python3 python3-websockets python3-redis redis-sentinel chromium haproxy nginx-light procps openssl \
             iproute2 python3-yaml clang libclang-rt-14-dev strace libnginx-mod-stream python3-jwt \
             python3-cryptography redis-tools
# Node.js with npm may come from elsewhere than Debian (NodeSource's nodejs ships npm
# and conflicts with Debian's npm): Debian's packages only when there is no node/npm.
DEB_NODE  := nodejs npm

define ensure_debs
	@missing=""; for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	  | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "wsgate: installing missing Debian packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	      || { echo "wsgate: apt-get install failed"; exit 1; }; \
	  else \
	    echo "wsgate: missing Debian packages:$$missing"; \
	    echo "wsgate: run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

deps:
	$(call ensure_debs,$(DEB_BUILD))

deps-test: deps
	$(call ensure_debs,$(DEB_TEST))
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  $(MAKE) --no-print-directory deps-node; fi
	@cd tests/integration && { [ -d node_modules/ws ] && [ -d node_modules/ioredis ] || \
	  npm install --no-audit --no-fund --silent; }

deps-node:
	$(call ensure_debs,$(DEB_NODE))

# --- run ------------------------------------------------------------------------------------
run: deps
	@$(MAKE) --no-print-directory all
	@tests/lib/run.sh $(BUILD) $(ARGS)

# --- tests ----------------------------------------------------------------------------------
# The layout rule of common/: pure code, no event loop and no Redis client inside.
check-layout:
	@! grep -nE '#include *[<"](event2/|hiredis/)' common/*.c common/*.h \
	  || { echo "common/ must not include libevent or hiredis"; exit 1; }

unit: check-layout
	@$(MAKE) --no-print-directory SANITIZE=1 build/asan/unit_tests
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 build/asan/unit_tests

test: deps-test deps-bench
	@$(MAKE) --no-print-directory all $(BUILD)/wsload $(BUILD)/wsredis $(FUZZ_BINS)
	@$(MAKE) --no-print-directory SANITIZE=1 build/asan/wsgate
	@tests/run-all.sh $(BUILD)

# Each fuzz target for FUZZ_SECONDS (make test runs a short fixed-seed pass of them).
FUZZ_SECONDS ?= 60
fuzz: deps-test
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	tests/fuzz/run.sh build $(FUZZ_SECONDS)

fuzz-smoke: deps-test
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	tests/fuzz/run.sh build smoke

# --- benchmarks (not part of make test; bench-smoke is) ---------------------------------------
deps-bench: deps
	$(call ensure_debs,python3-matplotlib)
	@cd tests/bench/peer-node && { [ -d node_modules/ws ] && [ -d node_modules/ioredis ] || \
	  npm install --no-audit --no-fund --silent; }

bench: deps-test deps-bench
	@$(MAKE) --no-print-directory all $(BUILD)/wsload $(BUILD)/wsredis
	/usr/bin/python3 tests/bench/bench.py --build $(BUILD) --out tests/bench/results

bench-smoke: deps-test deps-bench
	@$(MAKE) --no-print-directory all $(BUILD)/wsload $(BUILD)/wsredis
	/usr/bin/python3 tests/bench/bench.py --build $(BUILD) --smoke --out $(BUILD)/bench-smoke

# 1 000 000 idle connections against one gateway (52 workers) on this machine: about 12 GB
# of memory, mostly the kernel's; a few minutes. Writes tests/bench/results/scale.md.
bench-scale: deps
	@$(MAKE) --no-print-directory all $(BUILD)/wsload
	/usr/bin/python3 tests/bench/scale.py --build $(BUILD) --out tests/bench/results
