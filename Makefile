# s2d: one entry point. make | make test | make run | make deps | make bench | make fuzz | make clean
# BUILD=dir puts every output under dir (default build/). CUDA=1 is reserved for the CUDA backend.
BUILD ?= build
CC ?= gcc
CUDA ?= 0
ifeq ($(CUDA),1)
$(info make: CUDA=1 is reserved for the CUDA backend (cuda/), which is not built yet: building the CPU binary)
endif

BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIB := /usr/lib/x86_64-linux-gnu/openblas-openmp
WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wno-format-truncation
CPPFLAGS := -Isrc -Itests -I$(BLAS_INC) -D_GNU_SOURCE -MMD -MP
CFLAGS   := -std=c11 -O2 -g -fopenmp $(WARN)
# HDF5 (src/io) and MPI (mpi/ and main.c only) flags come from pkg-config; `make test` re-reads them after deps.
HDF5_CFLAGS := $(shell pkg-config --cflags hdf5 2>/dev/null)
HDF5_LIBS   := $(shell pkg-config --libs hdf5 2>/dev/null)
MPI_CFLAGS  := $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS    := $(shell pkg-config --libs ompi-c 2>/dev/null)
CPPFLAGS += $(HDF5_CFLAGS)
LDLIBS   := -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -lyaml -lcjson -lonig -lutf8proc $(HDF5_LIBS) -lm -fopenmp
SAN      := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# -O1 keeps sanitizer builds fast enough for the parity tests while still catching what -O0 would.
SAN_CFLAGS := -std=c11 -O1 -g -fopenmp $(WARN) $(SAN)

LIB_SRC   := $(filter-out src/main.c,$(wildcard src/*/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
SAN_OBJ   := $(LIB_SRC:%.c=$(BUILD)/san/%.o)
# mpi/: the runtime (roles, transport, scheduler); with main.c the only code that includes mpi.h.
MPI_SRC   := $(wildcard mpi/*.c)
MPI_OBJ   := $(MPI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC  := $(wildcard tests/unit/test_*.c)
TEST_BIN  := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# make test T=word: build and run only the tests whose name contains word.
ifneq ($(T),)
TEST_BIN  := $(foreach b,$(TEST_BIN),$(if $(findstring $(T),$(notdir $(b))),$(b)))
endif
TOOL_SRC  := $(wildcard tools/bench/*.c)
TOOL_BIN  := $(TOOL_SRC:tools/bench/%.c=$(BUILD)/tools/%)

.PHONY: all deps test run bench fuzz clean
all: $(BUILD)/s2d

deps:
	@tools/install_deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
$(BUILD)/obj/mpi/%.o: mpi/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Impi $(MPI_CFLAGS) $(CFLAGS) -c $< -o $@
$(BUILD)/obj/src/main.o: src/main.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Impi $(MPI_CFLAGS) $(CFLAGS) -c $< -o $@
$(BUILD)/san/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(SAN_CFLAGS) -c $< -o $@

$(BUILD)/libs2d.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(BUILD)/libs2d-san.a: $(SAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/s2d: $(BUILD)/obj/src/main.o $(MPI_OBJ) $(BUILD)/libs2d.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) $(MPI_LIBS)

# s2d itself under ASan+UBSan: tests/run.sh runs the CLI tests on it (the long training ones on build/s2d).
$(BUILD)/san/mpi/%.o: mpi/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Impi $(MPI_CFLAGS) $(SAN_CFLAGS) -c $< -o $@
$(BUILD)/san/src/main.o: src/main.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Impi $(MPI_CFLAGS) $(SAN_CFLAGS) -c $< -o $@
$(BUILD)/s2d-san: $(BUILD)/san/src/main.o $(MPI_SRC:%.c=$(BUILD)/san/%.o) $(BUILD)/libs2d-san.a
	$(CC) $(SAN_CFLAGS) $^ -o $@ $(LDLIBS) $(MPI_LIBS) $(SAN)

# Unit tests run under AddressSanitizer + UndefinedBehaviorSanitizer.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libs2d-san.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(SAN_CFLAGS) $< $(BUILD)/libs2d-san.a -o $@ $(LDLIBS) $(SAN)

$(BUILD)/tools/%: tools/bench/%.c $(BUILD)/libs2d.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(BUILD)/libs2d.a -o $@ $(LDLIBS)

test: deps
	@$(MAKE) --no-print-directory $(BUILD)/s2d $(BUILD)/s2d-san $(TEST_BIN)
	@tests/run.sh $(BUILD) $(T)

run: deps
	@$(MAKE) --no-print-directory $(BUILD)/s2d
	@tools/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory $(BUILD)/s2d $(TOOL_BIN)
	@tools/bench/run.sh $(BUILD)

# Coverage-guided fuzzing with libFuzzer (clang): FUZZ_SECONDS per target. Seeds: tests/fuzz/corpus_*;
# new finds go to $(BUILD)/fuzz/corpus_* so the committed corpus stays small.
FUZZ_SECONDS ?= 60
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
fuzz: deps
	@command -v clang >/dev/null || { echo "make fuzz: needs clang (apt-get install clang)"; exit 1; }
	@mkdir -p $(BUILD)/fuzz
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang $(CPPFLAGS) -std=c11 -g -O1 -fopenmp -fsanitize=fuzzer,address,undefined $$f $(LIB_SRC) \
	    -o $(BUILD)/fuzz/$$n $(LDLIBS) || exit 1; \
	  mkdir -p $(BUILD)/fuzz/corpus_$${n#fuzz_} tests/fuzz/corpus_$${n#fuzz_}; \
	  $(BUILD)/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -timeout=1 \
	    $(BUILD)/fuzz/corpus_$${n#fuzz_} tests/fuzz/corpus_$${n#fuzz_} || exit 1; \
	done

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d) $(SAN_OBJ:.o=.d) $(MPI_OBJ:.o=.d) $(BUILD)/obj/src/main.d
