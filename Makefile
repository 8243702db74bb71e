# nexus-sync build. `make` builds every worker and tool into bin/;
# `make check` runs the checks that need no server (the developer loop);
# `make test` runs the whole suite (make check, then the real-stack tests);
# `make demo` runs the main job (see README.md).

CC      ?= cc
CFLAGS  ?= -O2 -g
# Always on, whatever CFLAGS the command line gives (make asan sets it).
NS_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wformat=2 \
             -Wno-format-nonliteral -Icommon -MMD -MP
LDLIBS  += -lrdkafka -lpq -lcurl -lcjson -lconfig -lmicrohttpd -lpthread -lm

BUILD   ?= build
BIN     ?= bin

COMMON_SRC  := $(wildcard common/*.c)
COMMON_OBJ  := $(COMMON_SRC:%.c=$(BUILD)/%.o)
WORKER_SRC  := $(wildcard workers/*.c)
TOOL_SRC    := $(wildcard tools/*.c)
# nexus-dlq's pieces (tools/dlq/), linked into it alone
DLQ_SRC     := $(wildcard tools/dlq/*.c)
BENCH_SRC   := $(wildcard bench/*.c)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
PROGRAMS    := $(WORKER_SRC:workers/%.c=$(BIN)/%) $(TOOL_SRC:tools/%.c=$(BIN)/%) \
               $(BENCH_SRC:bench/%.c=$(BIN)/%)
UNIT_BINS   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# drivers of single modules that tests run against the real stack
CLIENT_SRC  := $(wildcard tests/clients/*.c)
CLIENT_BINS := $(CLIENT_SRC:tests/clients/%.c=$(BUILD)/tests/clients/%)
# the fuzz entry points with the corpus replayer (tests/fuzz/README.md)
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS   := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=$(BUILD)/tests/fuzz/replay_%)

.PHONY: all unit clients fuzz test check asan asan-unit chaos soak demo bench clean

# keep object files between runs (they are intermediates of pattern rules)
.SECONDARY:

all: $(PROGRAMS) $(UNIT_BINS) $(CLIENT_BINS) $(FUZZ_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(NS_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libnexus.a: $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BIN)/%: $(BUILD)/workers/%.o $(BUILD)/libnexus.a
	@mkdir -p $(dir $@)
	$(CC) $(NS_CFLAGS) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BIN)/%: $(BUILD)/tools/%.o $(BUILD)/libnexus.a
	@mkdir -p $(dir $@)
	$(CC) $(NS_CFLAGS) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BIN)/nexus-dlq: $(BUILD)/tools/nexus-dlq.o $(DLQ_SRC:%.c=$(BUILD)/%.o) $(BUILD)/libnexus.a
	@mkdir -p $(dir $@)
	$(CC) $(NS_CFLAGS) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BIN)/%: $(BUILD)/bench/%.o $(BUILD)/libnexus.a
	@mkdir -p $(dir $@)
	$(CC) $(NS_CFLAGS) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/tests/unit/cases.o $(BUILD)/libnexus.a
	@mkdir -p $(dir $@)
	$(CC) $(NS_CFLAGS) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/clients/%: $(BUILD)/tests/clients/%.o $(BUILD)/libnexus.a
	@mkdir -p $(dir $@)
	$(CC) $(NS_CFLAGS) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/fuzz/replay_%: $(BUILD)/tests/fuzz/replay.o $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/libnexus.a
	@mkdir -p $(dir $@)
	$(CC) $(NS_CFLAGS) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

unit: $(UNIT_BINS)

clients: $(CLIENT_BINS)

fuzz: $(FUZZ_BINS)

# Everything again, built with AddressSanitizer and UBSan (build/asan/bin:
# the workers for tests/test_memory.py); asan-unit only the unit tests.
ASAN_MAKE = $(MAKE) BUILD=build/asan BIN=build/asan/bin \
	    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined"
asan:
	$(ASAN_MAKE) all

asan-unit:
	$(ASAN_MAKE) unit fuzz

# The developer loop: no server, no apt. Builds, then runs every test that
# needs no server (conftest.py marks them `check`): the unit tests plain and
# under ASan/UBSan, the fuzz corpus replay, and the stack-free Python checks
# (mapping, configuration, compose, Kubernetes, alert rules, layering, docs).
# A check whose outside tool is missing is skipped with the reason;
# CHECK_SKIP_MISSING=0 (tests/run, which installs the tools) fails instead.
CHECK_SKIP_MISSING ?= 1
NPROC ?= $(shell nproc 2>/dev/null || echo 1)
check:
	$(MAKE) -j$(NPROC) all
	NEXUS_CHECK_SKIP_MISSING=$(CHECK_SKIP_MISSING) \
	    python3 -m pytest -p no:cacheprovider -q -rfEs -m check tests

# The whole suite: installs what is missing, runs `make check`, then the
# other tests, starting the local stack when one needs it; ends with
# pytest's summary line.
test:
	bash tests/run

# The fault tests in full (tests/test_chaos.py): a ~50k-change workload,
# more kills, every server restarted; figures in build/chaos-figures.jsonl.
chaos:
	NEXUS_CHAOS_SCALE=$${NEXUS_CHAOS_SCALE:-0.4} NEXUS_CHAOS_KILLS=$${NEXUS_CHAOS_KILLS:-12} \
	NEXUS_CHAOS_ROUNDS=$${NEXUS_CHAOS_ROUNDS:-2} NEXUS_CHAOS_SERVERS=1 \
	NEXUS_CHAOS_HOT=$${NEXUS_CHAOS_HOT:-8} NEXUS_CHAOS_DEADLOCK_ROUNDS=$${NEXUS_CHAOS_DEADLOCK_ROUNDS:-4} \
	    bash tests/run -k test_chaos

# The order-independence property test at length (tests/test_convergence.py):
# NEXUS_CONVERGE_HISTORIES seeded histories (default 50), each applied six
# ways; figures in build/convergence-figures.jsonl. NEXUS_CONVERGE_SEED
# reruns a reported seed.
soak:
	NEXUS_CONVERGE_HISTORIES=$${NEXUS_CONVERGE_HISTORIES:-50} NEXUS_CONVERGE_OPS=$${NEXUS_CONVERGE_OPS:-150} \
	NEXUS_CONVERGE_KILLS=$${NEXUS_CONVERGE_KILLS:-3} \
	    bash tests/run -s -k test_order_independence

demo:
	bash deploy/local/demo

# Throughput, latency and memory beside the Neo4j Kafka connector and Neo4j's
# own ceiling (bench/README.md); BENCH_SCALE=0.05 for a reduced run.
BENCH_SCALE ?= 1
bench: all
	python3 bench/run --scale $(BENCH_SCALE)

clean:
	rm -rf $(BUILD) $(BIN)

-include $(COMMON_OBJ:.o=.d) $(WORKER_SRC:%.c=$(BUILD)/%.d) $(TOOL_SRC:%.c=$(BUILD)/%.d) \
         $(DLQ_SRC:%.c=$(BUILD)/%.d) \
         $(BENCH_SRC:%.c=$(BUILD)/%.d) \
         $(UNIT_SRC:%.c=$(BUILD)/%.d) $(BUILD)/tests/unit/cases.d \
         $(CLIENT_SRC:%.c=$(BUILD)/%.d) $(FUZZ_SRC:%.c=$(BUILD)/%.d) $(BUILD)/tests/fuzz/replay.d
