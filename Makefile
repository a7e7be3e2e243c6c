# convnet: `make` builds the library and the tool (build/release); `make BUILD=asan` builds the
# same under AddressSanitizer and UBSan (build/asan); `make test` runs the whole suite in both.
BUILD ?= release
CC ?= cc
O := build/$(BUILD)

WARN := -Wall -Wextra -Wpointer-arith -Werror -Wno-unknown-pragmas -Wno-format-truncation
# clang does not know gcc's -Wformat-truncation
ifneq ($(findstring clang,$(shell $(CC) --version 2>/dev/null)),)
  WARN += -Wno-unknown-warning-option
endif
BASE := -std=c11 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc $(WARN)
ifeq ($(BUILD),asan)
  OPT := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
  OPT := -O3 -g
endif
CFLAGS_ALL := $(BASE) $(OPT) $(CFLAGS)
LDLIBS = -lcjson -ljpeg -lpng -lz -lm $(OMP_LINK) -lpthread
# The OpenMP runtime: LLVM's (Debian's libomp5) where it is installed, else GCC's (OMP_RT=gnu
# forces it). gcc's code calls the GOMP_ entry points, which libomp implements. libgomp's barriers
# wake the other threads with a futex system call every time, even when they are spinning: on
# these VMs 3.3 us a two-thread parallel region against libomp's 1.7 (and 1.3 us against 0.2 a
# one-thread region); EfficientNet-B0 at batch 1 runs ~80 regions and barriers an image.
OMP_RT ?= $(if $(filter /%,$(shell $(CC) -print-file-name=libomp.so.5)),llvm,gnu)
ifeq ($(OMP_RT),llvm)
  OMP_LINK := -l:libomp.so.5
else
  OMP_LINK := -fopenmp
endif
LDFLAGS_ALL := $(OPT) $(LDFLAGS)

# the fast kernels are compiled for their targets and chosen at run time
AVX512_FLAGS := -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma
AVX2_FLAGS := -mavx2 -mfma
# the int8 kernels: AVX-512 VNNI (vpdpbusd on zmm) and AVX-VNNI (its VEX form on ymm)
arch_flags = $(if $(findstring avx512vnni,$1),$(AVX512_FLAGS) -mavx512vnni,$(if $(findstring avx512,$1),$(AVX512_FLAGS),$(if $(findstring avxvnni,$1),$(AVX2_FLAGS) -mavxvnni,$(if $(findstring avx2,$1),$(AVX2_FLAGS)))))

LIB_SRC := $(wildcard src/core/*.c src/kernels/*.c src/ops/*.c src/graph/*.c src/models/*.c \
                      src/train/*.c src/io/*.c src/compress/*.c)
CLI_SRC := $(wildcard src/cli/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(O)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(O)/%.o)
TESTS := $(patsubst tests/%.c,$(O)/tests/%,$(filter-out tests/fuzz_%.c,$(wildcard tests/test_*.c)))

all: $(O)/convnet $(O)/libconvnet.a $(TESTS)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(call arch_flags,$<) -MMD -MP -c $< -o $@

$(O)/libconvnet.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# the runtime the programs were linked with: rewritten only when OMP_RT changes, so that a
# change relinks them
$(O)/omp-rt: FORCE
	@mkdir -p $(O)
	@echo $(OMP_RT) | cmp -s - $@ || echo $(OMP_RT) > $@

$(O)/convnet: $(CLI_OBJ) $(O)/libconvnet.a $(O)/omp-rt
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter-out $(O)/omp-rt,$^) $(LDLIBS)

$(O)/tests/%: $(O)/tests/%.o $(O)/libconvnet.a $(O)/omp-rt
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter-out $(O)/omp-rt,$^) $(LDLIBS)

$(O)/bench/%: $(O)/bench/%.o $(O)/libconvnet.a $(O)/omp-rt
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter-out $(O)/omp-rt,$^) $(LDLIBS)

test:
	bash tests/run.sh

clean:
	rm -rf build

.PHONY: all test clean FORCE
FORCE:
.SECONDARY:
-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TESTS:=.d)
