"""Unit tests: the C test binaries built from tests/unit/test_*.c, plain and
under AddressSanitizer/UBSan, and the fuzz corpus replayed under ASan/UBSan.

Each binary reads its data cases from tests/cases/<name>/ and prints
"ok NAME" / "not ok NAME: why" per case; it exits non-zero on any failure.
Needs no server. Standard library and pytest only.
"""
import os
import pathlib
import subprocess

import pytest

import nexus

ROOT = pathlib.Path(nexus.ROOT)
UNIT_NAMES = sorted(p.stem for p in (ROOT / "tests" / "unit").glob("test_*.c"))
CORPORA = sorted(p.name for p in (ROOT / "tests" / "fuzz" / "corpus").iterdir()
                 if p.is_dir()) if (ROOT / "tests" / "fuzz" / "corpus").is_dir() else []

SAN_ENV = {
    "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1:strict_string_checks=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}
TIMEOUT = 600


def _run(cmd, env=None, timeout=TIMEOUT):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(cmd, cwd=ROOT, env=full_env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")


def _tail(text, n=6000):
    return text if len(text) <= n else "...\n" + text[-n:]


def _failed_lines(out):
    bad = [line for line in out.splitlines() if line.startswith("not ok")]
    return "\n".join(bad[:50])


@pytest.fixture(scope="session")
def unit_build():
    """`make unit`, once per session."""
    res = _run(["make", f"-j{os.cpu_count() or 1}", "unit"])
    assert res.returncode == 0, f"make unit failed:\n{_tail(res.stdout)}"


@pytest.fixture(scope="session")
def asan_build():
    """`make asan-unit` (the unit tests and the fuzz replayers with
    ASan/UBSan), once per session."""
    res = _run(["make", f"-j{os.cpu_count() or 1}", "asan-unit"])
    assert res.returncode == 0, f"make asan-unit failed:\n{_tail(res.stdout)}"


def _check_unit(binary, env=None):
    assert binary.exists(), f"{binary} was not built"
    res = _run([str(binary)], env=env)
    assert res.returncode == 0, (
        f"{binary.relative_to(ROOT)} exited {res.returncode}\n"
        f"{_failed_lines(res.stdout)}\n--- output ---\n{_tail(res.stdout)}")
    assert " passed, 0 failed" in res.stdout, _tail(res.stdout)


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit(unit_build, name):
    _check_unit(ROOT / "build" / "tests" / name)


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_asan(asan_build, name):
    _check_unit(ROOT / "build" / "asan" / "tests" / name, env=SAN_ENV)


@pytest.mark.parametrize("corpus", CORPORA)
def test_fuzz_corpus_replay_asan(asan_build, corpus):
    """Every saved fuzz input, through the fuzz entry point, under gcc's
    ASan/UBSan (no clang needed); the Makefile builds the replayer of each
    tests/fuzz/fuzz_<corpus>.c (make asan-unit)."""
    entry = ROOT / "tests" / "fuzz" / f"fuzz_{corpus}.c"
    assert entry.exists(), f"corpus {corpus} has no entry point {entry.name}"
    binary = ROOT / "build" / "asan" / "tests" / "fuzz" / f"replay_{corpus}"
    assert binary.exists(), f"{binary} was not built"
    # libconfig's own leaks on a broken mapping text (tests/fuzz/lsan.supp)
    env = dict(SAN_ENV, LSAN_OPTIONS=f"suppressions={ROOT / 'tests' / 'fuzz' / 'lsan.supp'}")
    res = _run([str(binary), f"tests/fuzz/corpus/{corpus}"], env=env)
    assert res.returncode == 0, f"replay of {corpus} failed:\n{_tail(res.stdout)}"
    assert "replayed" in res.stdout, _tail(res.stdout)
