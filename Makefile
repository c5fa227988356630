# s2d: one entry point. make | make test | make run | make demo | make deps | make bench | make fuzz | make clean
# BUILD=dir puts every output under dir (default build/). CUDA=1 also builds the CUDA backend (cuda/, nvcc).
BUILD ?= build
CC ?= gcc
CUDA ?= 0

# CUDA backend: cuda/*.cu -> $(BUILD)/obj/cuda/*.o. `make cuda-check` (and `make test`, whenever nvcc is found)
# compiles them so they cannot rot; CUDA=1 links them into every binary. The objects go on the link line
# themselves, not into libs2d.a: the registry reaches ops_cuda_backend through a weak reference, which never
# pulls a member out of an archive.
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard $(CUDA_HOME)/bin/nvcc))
CU_SRC    := $(wildcard cuda/*.cu)
CU_OBJ    := $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
# sm_90 code for H100 / H200, plus its PTX so that newer GPUs can JIT it.
NVCCFLAGS := -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 -O3 -std=c++17 -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -Isrc -MMD -MP
CUDA_LINK_OBJ :=
CUDA_LIBS     :=
# tests/gpu/cuda_selftest: the CUDA ops against fp64 references and the CPU's loss / sampler code, through the
# backend table (it needs only these objects of src/, not the CPU backend); linked by cuda-check.
CU_SELFTEST     := $(BUILD)/tests/gpu/cuda_selftest
CU_SELFTEST_OBJ := $(addprefix $(BUILD)/obj/src/,core/common.o core/log.o core/timer.o core/rng.o core/signals.o ops/sampler.o ops/ops_vocab.o ops/ops_cpu.o ops/ops_rows.o ops/ops_vmath.o)
CU_LIBS_ALWAYS  := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublasLt -lcublas -lstdc++
ifeq ($(CUDA),1)
ifeq ($(NVCC),)
$(error make CUDA=1: nvcc not found (not on PATH, not in $(CUDA_HOME)/bin): install the CUDA toolkit (12.x or 13.x) or pass NVCC=/path/to/nvcc CUDA_HOME=/path/to/cuda)
endif
ifeq ($(wildcard $(CUDA_HOME)/lib64/libcublasLt.so),)
$(error make CUDA=1: $(CUDA_HOME)/lib64/libcublasLt.so not found: install cuBLAS (libcublas-dev) or pass CUDA_HOME=/path/to/cuda)
endif
CUDA_LINK_OBJ := $(CU_OBJ)
CUDA_LIBS     := $(CU_LIBS_ALWAYS)
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
# TensorBoard event files (src/io/tb_events.c): protoc-c turns src/io/tb_event.proto into C under $(BUILD)/gen.
PROTOC_C    ?= protoc-c
PROTOC_LIBS := $(or $(shell pkg-config --libs libprotobuf-c 2>/dev/null),-lprotobuf-c)
GEN_C       := $(BUILD)/gen/tb_event.pb-c.c
GEN_H       := $(GEN_C:.c=.h)
CPPFLAGS += -I$(BUILD)/gen
LDLIBS   := -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -lyaml -lcjson -lonig -lutf8proc $(HDF5_LIBS) $(PROTOC_LIBS) -lm -fopenmp
SAN      := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# -O1 keeps sanitizer builds fast enough for the parity tests while still catching what -O0 would.
SAN_CFLAGS := -std=c11 -O1 -g -fopenmp $(WARN) $(SAN) -DS2D_FAULT_POINTS

LIB_SRC   := $(filter-out src/main.c,$(wildcard src/*/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/tb_event.pb-c.o
SAN_OBJ   := $(LIB_SRC:%.c=$(BUILD)/san/%.o) $(BUILD)/san/gen/tb_event.pb-c.o
# mpi/: the runtime (roles, transport, scheduler); with main.c the only code that includes mpi.h.
MPI_SRC   := $(wildcard mpi/*.c)
MPI_OBJ   := $(MPI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC  := $(wildcard tests/unit/test_*.c)
TEST_BIN  := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# make test T=word: build and run only the tests whose name contains word, and build the unit-test binaries
# that those CLI tests call (e.g. test_export.sh runs tests/test_h5io --write-checkpoint).
ifneq ($(T),)
T_CLI_NEEDS := $(sort $(foreach s,$(wildcard tests/cli/test_*.sh),$(if $(findstring $(T),$(notdir $(s))),\
                 $(shell grep -ohE 'tests/test_[A-Za-z0-9_]+' $(s)))))
TEST_BIN  := $(foreach b,$(TEST_BIN),$(if $(or $(findstring $(T),$(notdir $(b))),$(filter tests/$(notdir $(b)),$(T_CLI_NEEDS))),$(b)))
endif
TOOL_SRC  := $(wildcard tools/bench/*.c)
TOOL_BIN  := $(TOOL_SRC:tools/bench/%.c=$(BUILD)/tools/%)

.PHONY: all deps test run demo bench fuzz clean cuda-check cuda-objs
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
# the generated protobuf-c code and the one file that includes its header
$(GEN_C) $(GEN_H) &: src/io/tb_event.proto
	@command -v $(PROTOC_C) >/dev/null || { echo "make: $(PROTOC_C) not found: make deps installs protobuf-c-compiler (and libprotobuf-c-dev)" >&2; exit 1; }
	@mkdir -p $(BUILD)/gen
	$(PROTOC_C) --c_out=$(BUILD)/gen --proto_path=src/io $<
$(BUILD)/obj/gen/tb_event.pb-c.o: $(GEN_C) $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
$(BUILD)/san/gen/tb_event.pb-c.o: $(GEN_C) $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(SAN_CFLAGS) -c $< -o $@
$(BUILD)/obj/src/io/tb_events.o $(BUILD)/san/src/io/tb_events.o: $(GEN_H)
$(BUILD)/obj/cuda/%.o: cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libs2d.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(BUILD)/libs2d-san.a: $(SAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/s2d: $(BUILD)/obj/src/main.o $(MPI_OBJ) $(CUDA_LINK_OBJ) $(BUILD)/libs2d.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) $(MPI_LIBS) $(CUDA_LIBS)

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
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libs2d-san.a $(CUDA_LINK_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(SAN_CFLAGS) $< $(CUDA_LINK_OBJ) $(BUILD)/libs2d-san.a -o $@ $(LDLIBS) $(SAN) $(CUDA_LIBS)

$(CU_SELFTEST): tests/gpu/cuda_selftest.c $(CU_OBJ) $(CU_SELFTEST_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(CU_OBJ) $(CU_SELFTEST_OBJ) -o $@ -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -lm -fopenmp $(CU_LIBS_ALWAYS)

$(BUILD)/tools/%: tools/bench/%.c $(BUILD)/libs2d.a $(CUDA_LINK_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(CUDA_LINK_OBJ) $(BUILD)/libs2d.a -o $@ $(LDLIBS) $(CUDA_LIBS)

test: deps
	@$(MAKE) --no-print-directory $(BUILD)/s2d $(BUILD)/s2d-san $(TEST_BIN)
	@if [ -n "$(NVCC)" ]; then $(MAKE) --no-print-directory cuda-check || exit 1; fi
	@tests/run.sh $(BUILD) $(T)

cuda-objs: $(CU_OBJ) $(CU_SELFTEST)
# Compiles every CUDA source (no GPU needed) and links the self-test; the GPU tests themselves are tests/gpu/run.sh.
cuda-check:
	@if [ -z "$(NVCC)" ]; then echo "cuda-check: nvcc not found (not on PATH, not in $(CUDA_HOME)/bin)"; exit 1; fi
	@$(MAKE) --no-print-directory cuda-objs
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then \
	  echo "cuda: $(words $(CU_SRC)) sources compiled; a GPU is visible: run tests/gpu/run.sh for the GPU tests"; \
	else echo "cuda: $(words $(CU_SRC)) sources compiled; GPU tests skipped: no GPU visible"; fi

# make run: the embedded study (docs/study.md); make demo: the single demo pipeline (configs/demo/demo.yaml).
run: deps
	@$(MAKE) --no-print-directory $(BUILD)/s2d
	@tools/study.sh $(BUILD)

demo: deps
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
	@$(MAKE) --no-print-directory $(GEN_C)
	@mkdir -p $(BUILD)/fuzz
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang $(CPPFLAGS) -std=c11 -g -O1 -fopenmp -fsanitize=fuzzer,address,undefined $$f $(LIB_SRC) $(GEN_C) \
	    -o $(BUILD)/fuzz/$$n $(LDLIBS) || exit 1; \
	  mkdir -p $(BUILD)/fuzz/corpus_$${n#fuzz_} tests/fuzz/corpus_$${n#fuzz_}; \
	  $(BUILD)/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -timeout=1 \
	    $(BUILD)/fuzz/corpus_$${n#fuzz_} tests/fuzz/corpus_$${n#fuzz_} || exit 1; \
	done

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d) $(SAN_OBJ:.o=.d) $(MPI_OBJ:.o=.d) $(BUILD)/obj/src/main.d $(CU_OBJ:.o=.d)
