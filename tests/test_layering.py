"""The modules of common/ form layers: the includes between them (a module
is its .c and .h) have no cycle, and the worker loop (consumer) sits on
top, included by nothing but the thin main (worker.c). common/README.md
shows the same layers; this test checks that they still hold. Needs no
server."""
import pathlib
import os
import re
import subprocess

import nexus

ROOT = pathlib.Path(nexus.ROOT)
COMMON = ROOT / "common"
INCLUDE = re.compile(r'^#include "([a-z0-9_]+)\.h"', re.M)


def module_graph():
    mods = {p.stem for p in COMMON.glob("*.[ch]")}
    deps = {m: set() for m in mods}
    for p in COMMON.glob("*.[ch]"):
        for dep in INCLUDE.findall(p.read_text()):
            if dep != p.stem and dep in mods:
                deps[p.stem].add(dep)
    return deps


def layers(deps):
    """Modules by layer: layer 0 includes nothing of ours, layer k only
    modules of lower layers. Raises on a cycle."""
    level, left = {}, dict(deps)
    while left:
        ready = [m for m, d in left.items() if all(x in level for x in d)]
        if not ready:
            raise AssertionError(f"include cycle among: {sorted(left)}")
        for m in ready:
            level[m] = 1 + max((level[x] for x in left[m]), default=-1)
            del left[m]
    return level


def test_common_includes_have_no_cycle():
    layers(module_graph())


def test_the_loop_is_on_top_and_its_pieces_below_it():
    deps = module_graph()
    level = layers(deps)
    users = {m for m, d in deps.items() if "consumer" in d}
    assert users <= {"worker"}, f"only the main may include consumer.h: {sorted(users)}"
    for piece in ("backlog", "batch", "lanes", "writeback", "deadletter", "prepare", "process", "retry",
                  "kafka", "schema"):
        assert level[piece] < level["consumer"], piece
        assert "consumer" not in deps[piece], piece


def test_readme_names_every_module():
    text = (COMMON / "README.md").read_text()
    missing = [m for m in sorted(module_graph()) if f"`{m}`" not in text]
    assert not missing, f"common/README.md does not mention: {missing}"


if __name__ == "__main__":
    lv = layers(module_graph())
    for k in range(max(lv.values()) + 1):
        print(k, " ".join(sorted(m for m, v in lv.items() if v == k)))


def test_log_h_and_syslog_h_in_one_file(tmp_path):
    """log.h's levels are NS_LOG_*: a file may include <syslog.h> (whose
    LOG_INFO and LOG_DEBUG are macros) beside it."""
    src = tmp_path / "both.c"
    src.write_text('#include <syslog.h>\n#include "log.h"\n'
                   "int main(void) { return NS_LOG_INFO == LOG_INFO ? 0 : 1; }\n")
    p = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", os.path.join(ROOT, "common"),
                        "-c", str(src), "-o", str(tmp_path / "both.o")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
