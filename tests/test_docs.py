"""The documentation against the code, with no server: docs/configuration.md
names every setting the C code reads and nothing it does not, and every
relative link of README.md and docs/*.md (and the other READMEs) resolves,
anchors included.

The rule for configuration.md: its `## Reference` section lists exactly
 - the `section.key` settings (and top-level names) that common/config.c
   looks up in the settings file, and
 - the NEXUS_* variables that the C code of common/, workers/, tools/ and
   bench/ reads (a variable read through env_secret() also as its _FILE
   twin),
except for its last table, `### Variables of the stack, the tests and the
benchmark`, which lists variables read only by scripts: each of those must
still occur in deploy/, tests/, bench/ or the Makefile. Every other NEXUS_*
that README.md or a file of docs/ mentions must be one of the two kinds.
Standard library and pytest only."""
import pathlib
import re

import pytest

import nexus

ROOT = pathlib.Path(nexus.ROOT)
CONFIG_DOC = ROOT / "docs" / "configuration.md"
C_DIRS = ("common", "workers", "tools", "bench")
SCRIPT_PLACES = ("deploy", "tests", "bench", "Makefile", "docker-compose.yml")
STACK_TABLE = "### Variables of the stack, the tests and the benchmark"

LOOKUP = re.compile(r'\b(?:config_lookup\w*|file_int_min|(?:config_)?setting_where)\s*\(([^;]*?)\)\s*[;,)|&]',
                    re.S)
STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
KEY = r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?"
DOTTED = r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*"
NEXUS_VAR = re.compile(r"\bNEXUS_[A-Z0-9_]*[A-Z0-9]\b")


def _strip_comments(src):
    """C source without comments and #include lines."""
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    src = re.sub(r"(?m)^\s*#\s*include[^\n]*", " ", src)
    return re.sub(r"//[^\n]*", " ", src)


def config_keys():
    """The settings-file names common/config*.c read: the string literals
    handed to libconfig lookups (and to its helpers that look a name up),
    plus every literal `<section>.<key>` of a section seen there (keys
    named through a table, like neo4j.password_file)."""
    src = _strip_comments("\n".join(p.read_text() for p in sorted((ROOT / "common").glob("config*.c"))))
    direct = set()
    for m in LOOKUP.finditer(src):
        for s in STRING.findall(m.group(1)):
            if re.fullmatch(KEY, s):
                direct.add(s)
    sections = {k.split(".")[0] for k in direct if "." in k}
    table = {s for s in STRING.findall(src)
             if re.fullmatch(DOTTED, s) and s.split(".")[0] in sections}
    return direct | table


def code_env_vars():
    """NEXUS_* names the C code reads: every string literal naming one in
    the C sources, subfolders included (the code passes them to getenv(), env_value(),
    env_secret(), env_int(), env_or() or to tables that feed those), plus
    NAME_FILE for each NAME in a file that reads secrets via env_secret()."""
    names = set()
    for d in C_DIRS:
        for p in sorted((ROOT / d).rglob("*.c")):
            src = _strip_comments(p.read_text())
            lits = {s for s in STRING.findall(src) if re.fullmatch(r"NEXUS_[A-Z0-9_]+", s)}
            names |= lits
            if re.search(r"\b(?:config_)?env_secret\s*\(", src):
                names |= {f"{s}_FILE" for s in lits if s.endswith("_PASSWORD")}
    return names


def reference_sections():
    """(worker and tool reference, stack table) texts of configuration.md."""
    text = CONFIG_DOC.read_text()
    assert "\n## Reference\n" in text, "docs/configuration.md has no '## Reference' section"
    ref = text.split("\n## Reference\n", 1)[1]
    ref = re.split(r"\n## ", ref, maxsplit=1)[0]
    assert STACK_TABLE in ref, f"docs/configuration.md's Reference has no '{STACK_TABLE}'"
    code_part, stack_part = ref.split(STACK_TABLE, 1)
    return code_part, stack_part


def table_cells(text, column):
    """The backquoted words of one column of every markdown table row."""
    words = set()
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if column < len(cells):
            words |= set(re.findall(r"`([^`]+)`", cells[column]))
    return words


def test_the_scanners_find_what_the_code_reads():
    """A guard on the guards: the scanners above see known names, so an
    empty set never passes for 'nothing to document'."""
    keys = config_keys()
    assert {"mapping", "kafka", "batch.max_events", "neo4j.password_file",
            "tombstones.horizon_s", "postgres.sslrootcert"} <= keys, keys
    assert not {"bootstrap.servers", "sasl.password"} & keys, keys
    env = code_env_vars()
    assert {"NEXUS_MAPPING", "NEXUS_STATS_DIR", "NEXUS_RETRY_MAX_MS",
            "NEXUS_NEO4J_PASSWORD_FILE", "NEXUS_VERIFY_PASSWORD_FILE",
            "NEXUS_CDC_POLL_MS"} <= env, env


def test_every_config_key_is_documented_and_no_other():
    code_part, _ = reference_sections()
    documented = {w for w in table_cells(code_part, 0) if re.fullmatch(KEY, w)}
    keys = config_keys()
    assert not keys - documented, (
        f"settings common/config.c reads but docs/configuration.md's reference does not list: "
        f"{sorted(keys - documented)}")
    assert not documented - keys, (
        f"settings docs/configuration.md lists but common/config.c does not read: "
        f"{sorted(documented - keys)}")


def test_every_environment_variable_is_documented_and_no_other():
    code_part, _ = reference_sections()
    documented = set(NEXUS_VAR.findall(code_part))
    env = code_env_vars()
    assert not env - documented, (
        f"variables the C code reads but docs/configuration.md's reference does not list: "
        f"{sorted(env - documented)}")
    assert not documented - env, (
        f"variables docs/configuration.md's reference lists but no C code reads: "
        f"{sorted(documented - env)} (a script's variable goes in '{STACK_TABLE}')")


def _script_text():
    texts = []
    for place in SCRIPT_PLACES:
        p = ROOT / place
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            if (f.suffix in {".md", ".png", ".jar", ".zip", ".pyc"} or f.name == "test_docs.py"
                    or "out" in f.relative_to(ROOT).parts):
                continue
            try:
                texts.append(f.read_text(errors="replace"))
            except OSError:
                pass
    return "\n".join(texts)


def test_stack_variables_are_used_by_a_script():
    _, stack_part = reference_sections()
    listed = set(NEXUS_VAR.findall(stack_part))
    assert listed, "the stack table lists no variable"
    scripts = set(NEXUS_VAR.findall(_script_text()))
    assert not listed - scripts, (
        f"docs/configuration.md's stack table lists variables no script uses: "
        f"{sorted(listed - scripts)}")


def doc_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_variable_the_docs_mention_exists():
    """A NEXUS_* in README.md or docs/ is one the C code reads or one the
    stack table lists (prefixes such as `NEXUS_PG_*` aside)."""
    _, stack_part = reference_sections()
    known = code_env_vars() | set(NEXUS_VAR.findall(stack_part))
    for p in doc_files():
        text = re.sub(r"NEXUS_[A-Z0-9_]*_?\*", " ", p.read_text())
        unknown = set(NEXUS_VAR.findall(text)) - known
        assert not unknown, f"{p.relative_to(ROOT)} mentions unknown variables: {sorted(unknown)}"


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path):
    """GitHub's anchors of a markdown file's headings."""
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            h = m.group(1).strip().lower()
            h = re.sub(r"[^\w\- ]", "", h)
            out.add(h.replace(" ", "-"))
    return out


def linked_files():
    return doc_files() + [p for p in (ROOT / "bench" / "README.md", ROOT / "common" / "README.md",
                                      ROOT / "deploy" / "local" / "README.md",
                                      ROOT / "tests" / "fuzz" / "README.md") if p.exists()]


@pytest.mark.parametrize("path", linked_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    bad = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor}")
    assert not bad, f"{path.relative_to(ROOT)}: broken links:\n" + "\n".join(bad)


def test_readme_layout_names_every_module():
    """README.md's Layout lists every module of common/ (test_layering.py
    checks the same of common/README.md), so it cannot fall behind again."""
    text = (ROOT / "README.md").read_text()
    assert "\n## Layout\n" in text, "README.md has no Layout section"
    layout = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"[a-z_0-9]+", layout))
    modules = {p.stem for p in (ROOT / "common").glob("*.[ch]")}
    missing = sorted(modules - named)
    assert not missing, f"README.md's Layout does not name these common/ modules: {missing}"
