# fewshot — build, test and benchmark. See README.md.
CC      ?= cc
OPT     ?= -O3 -march=native
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wmissing-prototypes -Wunused-macros -fopenmp -Iinclude -Isrc \
           $(shell pkg-config --cflags hdf5 2>/dev/null)
LDLIBS  += -lcjson $(shell pkg-config --libs hdf5 2>/dev/null || echo -lhdf5_serial) -lm -fopenmp

BUILD   ?= build
# -O2 keeps the SIMDe wrappers inlined; at -O1 the sanitized kernels are ~50x slower.
ASAN_OPT = -O2 -march=native -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
# src/ is layered (README "Code map"); the CLI (src/cli) goes into the binary only.
LAYERS  := base simd kernels model interp io train kv api
LIB_SRC := $(foreach l,$(LAYERS),$(wildcard src/$(l)/*.c))
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/src/%.o)
CLI_SRC := $(wildcard src/cli/*.c)
CLI_OBJ := $(CLI_SRC:src/%.c=$(BUILD)/src/%.o)
HEADERS := $(wildcard include/fewshot/*.h src/*/*.h)
TEST_SRC:= $(wildcard tests/*.c)
TEST_OBJ:= $(TEST_SRC:tests/%.c=$(BUILD)/tests/%.o)
# The shared library: the same sources compiled position-independent in their own tree.
PIC_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/pic/%.o)
VERSION := $(shell sed -n 's/^\#define FEWSHOT_VERSION "\(.*\)"/\1/p' include/fewshot/version.h)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
SONAME  := libfewshot.so.$(SOMAJOR)
# make install [PREFIX=/usr/local] [DESTDIR=staging]: binary, libraries, headers, fewshot.pc
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin

.PHONY: all lib deps deps-bench deps-cache deps-python deps-report deps-slurm test test-portable test-avx2 test-install \
        test-python test-report test-slurm install uninstall asan-test ubsan-clang-test valgrind bench bench-compare \
        bench-compare-sizes check-layers clean deps-fuzz fuzz fuzz-ci fuzz-build fuzz-replay

all: fewshot lib

lib: $(BUILD)/libfewshot.a $(BUILD)/libfewshot.so

deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    build-essential pkg-config libcjson-dev libsimde-dev libcriterion-dev libhdf5-dev

# Optional: h5dump/h5ls to inspect cache files (README "Caches for many sequences").
deps-cache:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hdf5-tools

# Optional: PyTorch for `make bench-compare` (Debian's python3-torch, CPU only, on OpenBLAS).
deps-bench:
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-torch python3-numpy libopenblas0-pthread

# The Python module's dependencies (numpy, cffi in ABI mode, pytest).
deps-python:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    python3-numpy python3-cffi python3-pytest

# fewshot report: Chart.js (inlined into every report) and Chromium (the browser test).
deps-report:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libjs-chart.js chromium

# Optional: a real one-node SLURM for `make test-slurm` (Debian packages).
deps-slurm:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge

$(BUILD)/src/%.o: src/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%.o: tests/%.c $(HEADERS) $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libfewshot.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/pic/%.o: src/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -c $< -o $@

$(BUILD)/libfewshot.so.$(VERSION): $(PIC_OBJ)
	$(CC) $(CFLAGS) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined $^ -o $@ $(LDLIBS)

$(BUILD)/libfewshot.so: $(BUILD)/libfewshot.so.$(VERSION)
	ln -sf libfewshot.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

install: fewshot lib
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)/fewshot
	install -m 755 fewshot $(DESTDIR)$(BINDIR)/fewshot
	install -m 644 $(BUILD)/libfewshot.a $(DESTDIR)$(LIBDIR)/libfewshot.a
	install -m 755 $(BUILD)/libfewshot.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libfewshot.so.$(VERSION)
	ln -sf libfewshot.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libfewshot.so
	install -m 644 include/fewshot/*.h $(DESTDIR)$(INCDIR)/fewshot/
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCDIR)' '' \
	    'Name: fewshot' 'Description: few-shot sequence classification with small transformers' \
	    'Version: $(VERSION)' 'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -lfewshot' \
	    'Libs.private: $(LDLIBS)' > $(DESTDIR)$(LIBDIR)/pkgconfig/fewshot.pc

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/fewshot $(DESTDIR)$(LIBDIR)/libfewshot.a $(DESTDIR)$(LIBDIR)/libfewshot.so \
	    $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libfewshot.so.$(VERSION) \
	    $(DESTDIR)$(LIBDIR)/pkgconfig/fewshot.pc
	rm -f $(patsubst include/%,$(DESTDIR)$(INCDIR)/%,$(wildcard include/fewshot/*.h))
	-rmdir $(DESTDIR)$(INCDIR)/fewshot 2>/dev/null

# Installs into a temporary prefix, builds a C program against it with pkg-config (shared
# and static) and runs it; then uninstalls and checks nothing is left.
test-install:
	tests/test_install.sh

# The Python module (python/fewshot) over the shared library; needs make deps-python
# (Debian's packages, for the system interpreter: PYTHON=/usr/bin/python3).
PYTHON  ?= /usr/bin/python3
test-python: fewshot lib
	FEWSHOT_LIB=$(CURDIR)/$(BUILD)/libfewshot.so PYTHONPATH=$(CURDIR)/python $(PYTHON) -m pytest -q python/tests

# The report's HTML template (a normal file in the repo) compiled into the binary.
$(BUILD)/gen/report_template.c: src/cli/report/template.html
	@mkdir -p $(dir $@)
	{ echo '/* generated from $< by the Makefile */'; echo 'const char fs_report_template[] = {'; \
	  od -An -v -tx1 $< | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '0};'; } > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/report_template.o: $(BUILD)/gen/report_template.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/fewshot: $(CLI_OBJ) $(BUILD)/gen/report_template.o $(BUILD)/libfewshot.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

fewshot: $(BUILD)/fewshot
	cp $< $@.tmp && mv -f $@.tmp $@

$(BUILD)/test_fewshot: $(TEST_OBJ) $(BUILD)/libfewshot.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lcriterion

# Tests run from the repository root; golden files are read from tests/golden. The fuzz
# targets' seeds and kept crash inputs (tests/fuzz/regressions) are replayed too.
test: check-layers $(BUILD)/test_fewshot fewshot fuzz-replay
	$(BUILD)/test_fewshot -j2

# The other vector widths: SIMDe's portable code (what ARM builds run; no -march) and
# AVX2/FMA (8-float vectors on any x86-64 since 2013), each in its own build folder,
# running the golden, finite-difference, kernel and key-value cache tests.
WIDTH_TESTS = @(golden|fdcheck|kernels|kernel_table|kvcache|kvcompress|kvbatch)/*
test-portable:
	$(MAKE) BUILD=build-portable OPT="-O2 -DSIMDE_NO_NATIVE" build-portable/test_fewshot build-portable/fewshot
	FEWSHOT_BIN=build-portable/fewshot build-portable/test_fewshot -j2 --filter '$(WIDTH_TESTS)'

test-avx2:
	$(MAKE) BUILD=build-avx2 OPT="-O3 -mavx2 -mfma" build-avx2/test_fewshot build-avx2/fewshot
	FEWSHOT_BIN=build-avx2/fewshot build-avx2/test_fewshot -j2

# fewshot report in headless Chromium (needs make deps-report): tests/report_test.sh.
test-report: fewshot
	tests/report_test.sh

# Sweeps on a real one-node SLURM cluster started for the test (needs root and deps-slurm).
test-slurm: fewshot
	tests/slurm_test.sh ./fewshot

# Includes point only downward through the layers (tests/check_layers.sh).
check-layers:
	tests/check_layers.sh

# gcc ASan+UBSan, then clang's UBSan (it checks what gcc's does not, e.g. pointer
# arithmetic on NULL): both run the whole suite against their own binary. clang gets
# -ffp-contract=off, gcc's default under -std=c11, so bit-exact tests see the same floats.
asan-test:
	$(MAKE) BUILD=build-asan OPT="$(ASAN_OPT)" \
	    build-asan/test_fewshot build-asan/fewshot
	cp build-asan/fewshot fewshot-asan
	FEWSHOT_BIN=./fewshot-asan ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    UBSAN_OPTIONS=print_stacktrace=1 build-asan/test_fewshot -j2
	$(MAKE) ubsan-clang-test

UBSAN_CLANG_OPT = -O2 -march=native -g -ffp-contract=off -fno-omit-frame-pointer -fsanitize=undefined,float-cast-overflow \
                  -fno-sanitize-recover=all
ubsan-clang-test: deps-fuzz
	$(MAKE) CC=clang BUILD=build-ubsan OPT="$(UBSAN_CLANG_OPT)" build-ubsan/test_fewshot build-ubsan/fewshot
	cp build-ubsan/fewshot fewshot-ubsan
	FEWSHOT_BIN=./fewshot-ubsan UBSAN_OPTIONS=print_stacktrace=1 build-ubsan/test_fewshot -j2

# ---- fuzzing (tests/fuzz/README.md): libFuzzer targets built with clang ----
FUZZ_TARGETS := safetensors seqjson config clamps checkpoint classify hdf5
FUZZ_SECONDS ?= 60
FUZZ_OPT = -O1 -march=native -g -ffp-contract=off -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
# each target's seed corpus: the repository's own files of that format
FUZZ_SEEDS_safetensors = tests/golden/*/*.safetensors tests/fuzz/seeds/checkpoint
FUZZ_SEEDS_seqjson = datasets/examples/seq_doc.json datasets/examples/batch_doc.json tests/fuzz/seeds/seqjson
FUZZ_SEEDS_config = configs/*.json tests/golden/*/config.json tests/fuzz/seeds/config
FUZZ_SEEDS_clamps = tests/golden/attn_only/clamp_*[a-z].json tests/fuzz/seeds/clamps
FUZZ_SEEDS_checkpoint = tests/fuzz/seeds/checkpoint
FUZZ_SEEDS_classify = datasets/examples/classify_*.json
FUZZ_SEEDS_hdf5 = tests/fuzz/seeds/hdf5 datasets/synth_small.h5

# Debian's clang brings libFuzzer and the sanitizer runtimes.
deps-fuzz:
	@command -v clang >/dev/null || { apt-get update && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang; }

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h build-fuzz/libfewshot.a
	clang $(CFLAGS:$(OPT)=) $(FUZZ_OPT) -fsanitize=fuzzer $< build-fuzz/libfewshot.a -o $@ $(LDLIBS)

# the library instrumented for coverage (the pattern rules above with BUILD=build-fuzz)
fuzz-build: deps-fuzz
	$(MAKE) CC=clang BUILD=build-fuzz OPT="$(FUZZ_OPT) -fsanitize=fuzzer-no-link" build-fuzz/libfewshot.a
	$(MAKE) $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)

# Each target runs FUZZ_SECONDS on a corpus in build-fuzz/corpus/T (seeded from the repo);
# a crash stops it and leaves the input in tests/fuzz/regressions/T/ (replayed by make test).
define fuzz_one
mkdir -p build-fuzz/corpus/$(1) tests/fuzz/regressions/$(1); \
for f in $(FUZZ_SEEDS_$(1)); do if [ -d $$f ]; then cp $$f/* build-fuzz/corpus/$(1)/ 2>/dev/null || true; \
    else cp $$f build-fuzz/corpus/$(1)/; fi; done; \
echo "== fuzz_$(1) for $(FUZZ_SECONDS) s"; \
build-fuzz/fuzz_$(1) -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix=tests/fuzz/regressions/$(1)/ build-fuzz/corpus/$(1) > build-fuzz/fuzz_$(1).log 2>&1 \
    || echo "fuzz_$(1): FOUND A CRASH (input kept in tests/fuzz/regressions/$(1)/)"; \
grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|stat::average_exec_per_sec|ERROR|Test unit written" \
    build-fuzz/fuzz_$(1).log | tail -6;
endef

fuzz: fuzz-build
	@$(foreach t,$(FUZZ_TARGETS),$(call fuzz_one,$(t)))

fuzz-ci:
	$(MAKE) fuzz FUZZ_SECONDS=20

# gcc builds of the targets with a plain main: replay seeds and kept crash inputs.
$(BUILD)/fuzz-replay/%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c tests/fuzz/fuzz_common.h $(BUILD)/libfewshot.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< tests/fuzz/replay_main.c $(BUILD)/libfewshot.a -o $@ $(LDLIBS)

fuzz-replay: $(FUZZ_TARGETS:%=$(BUILD)/fuzz-replay/%)
	@$(foreach t,$(FUZZ_TARGETS),$(BUILD)/fuzz-replay/$(t) tests/fuzz/regressions/$(t) $(FUZZ_SEEDS_$(t)) &&) true

# valgrind cannot decode AVX-512: build for AVX2 (SIMDe maps the kernels) and run the commands.
valgrind:
	$(MAKE) BUILD=build-valgrind OPT="-O2 -g -mavx2 -mfma" build-valgrind/fewshot
	tests/valgrind.sh build-valgrind/fewshot

bench: fewshot
	./fewshot bench

bench-compare: fewshot
	python3 bench/compare.py

# The same on the model-size ladder (fewshot bench --sizes), training only.
bench-compare-sizes: fewshot
	python3 bench/compare.py --sizes

clean:
	rm -rf build build-asan build-ubsan build-fuzz build-valgrind build-portable build-avx2 fewshot fewshot-asan \
	    fewshot-ubsan
