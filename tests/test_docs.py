"""The README and the manual in docs/: every relative link resolves, the README stays a front page, and its
set-up commands are the ones CI runs.

- Every relative link and image in README.md and docs/*.md points at a file of the repository, and a
  `#anchor` at a heading of the target (GitHub's slugs). External links are not fetched.
- README.md is at most 200 lines.
- The set-up block of README.md holds two commands: the one `.ci/run` executes (the tests), and a Makefile
  target that runs `dvc repro` (the pipeline).
- The README's results table shows what `dvc repro` wrote to metrics/accuracy.json.
"""
import json
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 200


def doc_files(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# --- markdown ------------------------------------------------------------------------------------------------

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def without_fenced_code(text: str) -> str:
    """The text with every fenced code block blanked (lines kept, so line numbers still count)."""
    out, fence = [], None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append("")
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):]:
                fence = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)


def without_inline_code(text: str) -> str:
    return INLINE_CODE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


# [text](target "title") and ![alt](target); the text may hold one level of [nested] brackets and span lines.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HTML_LINK = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']*)[\"']", re.I)


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link, image and reference definition outside code."""
    plain = without_inline_code(without_fenced_code(text))
    found = []
    for pattern in (LINK, REFERENCE, HTML_LINK):
        for m in pattern.finditer(plain):
            found.append((plain.count("\n", 0, m.start(1)) + 1, m.group(1)))
    return sorted(found)


ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (no markup) lower-cased, punctuation but `-` and `_` dropped,
    spaces to `-`."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for line in without_fenced_code(text).split("\n"):
        m = ATX_HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """What is wrong with each relative link of one markdown file, as 'file:line: target: why'."""
    text = path.read_text(encoding="utf-8")
    problems = []
    for line, target in links(text):
        where = f"{path.relative_to(root)}:{line}: {target or '(empty)'}"
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ... are not fetched
            continue
        if not target:
            problems.append(f"{where}: empty link")
            continue
        file_part, _, anchor = target.partition("#")
        file_part, anchor = unquote(file_part), unquote(anchor)
        if file_part.startswith("/"):
            problems.append(f"{where}: absolute path; link relative to the file instead")
            continue
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{where}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if not anchor:
            continue
        if dest.is_dir():
            problems.append(f"{where}: an anchor into a folder")
        elif dest.suffix.lower() == ".md":
            if anchor not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(root.resolve())}")
        elif m := re.fullmatch(r"L(\d+)(?:-L(\d+))?", anchor):
            lines = len(dest.read_text(encoding="utf-8", errors="replace").splitlines())
            if max(int(g) for g in m.groups() if g) > lines:
                problems.append(f"{where}: the file has {lines} lines")
        else:
            problems.append(f"{where}: anchor #{anchor} into a file that has no headings")
    return problems


# --- the set-up commands, .ci/run and the Makefile ----------------------------------------------------------


def setup_commands(readme: str) -> list[str]:
    """The commands of the first code block under the README's "Set-up" heading, comments left out."""
    section = re.search(r"^##+ +Set-up\b.*?$(.*?)(?=^##+ |\Z)", readme, re.M | re.S | re.I)
    assert section, 'README.md has no "## Set-up" section'
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.M | re.S)
    assert block, 'the "Set-up" section of README.md has no code block'
    return [cmd for line in block.group(1).splitlines() if (cmd := command(line))]


def command(line: str) -> str:
    """A shell line without its comment (a `#` that starts a word), words joined by one space ('' for a
    comment or a blank line). Quotes are not parsed: the commands compared here have none."""
    return " ".join(re.sub(r"(^|\s)#.*", "", line).split())


OPENERS, CLOSERS = ("if", "for", "while", "until", "case", "{"), ("fi", "done", "esac", "}")


def ci_commands(script: str) -> list[str]:
    """The commands `.ci/run` executes at its top level: what is left after comments, `set`, `cd`, `export`
    and if/for/while blocks (the optional set-up steps, such as installing Chromium); `exec` is dropped."""
    commands, depth = [], 0
    for line in script.splitlines():
        cmd = command(line)
        words = cmd.split(" ")
        opens = words[0] in OPENERS
        closes = words[0] in CLOSERS or (opens and words[-1].rstrip(";") in CLOSERS)
        if opens or closes:  # `if ...; then`, `fi`, or a whole `if ...; then ...; fi` on one line
            depth += opens - closes
            continue
        if depth or not cmd or words[0] in ("set", "cd", "export", "shopt", "trap", "source", "."):
            continue
        commands.append(cmd.removeprefix("exec "))
    return commands


def make_recipe(makefile: str, target: str) -> str:
    """The recipe of one Makefile target with $(VARIABLES) expanded from the Makefile's own definitions."""
    variables = dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*[:?+]?=[ \t]*(.*)$", makefile, re.M))
    m = re.search(rf"^{re.escape(target)}\s*:(?!=)[^\n]*\n((?:\t[^\n]*\n?)*)", makefile, re.M)
    assert m, f"the Makefile has no target {target!r}"
    recipe = m.group(1)
    for _ in range(10):
        recipe = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda v: variables.get(v.group(1), ""), recipe)
    return recipe


def check_setup(readme: str, ci_script: str, makefile: str) -> list[str]:
    """Why the README's set-up commands differ from what CI runs, or [] when they agree."""
    readme_cmds, ci_cmds = setup_commands(readme), ci_commands(ci_script)
    problems = []
    if len(readme_cmds) != 2:
        problems.append(f"the README's set-up block should hold two commands (pipeline, tests), not {readme_cmds}")
    if len(ci_cmds) != 1:
        problems.append(f".ci/run should run one command, the README's test command; it runs {ci_cmds}")
    if problems:
        return problems
    test_cmd = ci_cmds[0]
    if test_cmd not in readme_cmds:
        return [f".ci/run runs {test_cmd!r}, which is not a set-up command of README.md ({readme_cmds})"]
    target = test_cmd.split(" ")[1] if test_cmd.startswith("make ") else None
    if target and "pytest" not in make_recipe(makefile, target):
        problems.append(f"`{test_cmd}` (the README's test command, run by .ci/run) does not run pytest")
    (pipeline_cmd,) = [c for c in readme_cmds if c != test_cmd]
    words = pipeline_cmd.split(" ")
    if len(words) != 2 or words[0] != "make":
        problems.append(f"the README's pipeline command {pipeline_cmd!r} is not `make <target>`")
    elif "dvc repro" not in make_recipe(makefile, words[1]):
        problems.append(f"`{pipeline_cmd}` (the README's pipeline command) does not run `dvc repro`")
    return problems


# --- the repository's docs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path):
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it a front page (at most {MAX_README_LINES}) and move the rest "
        "into docs/"
    )


def test_readme_setup_commands_are_the_ones_ci_runs():
    readme = README.read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    problems = check_setup(readme, ci, makefile)
    assert not problems, "\n".join(problems)


# README's results table column -> key in metrics/accuracy.json
RESULT_COLUMNS = {"test": "test", "asl-other-dev": "asl-other-dev", "asl-webcam-dev": "asl-webcam-dev",
                  "signers left out (mean)": "signers_left_out", "its standard error": "signers_left_out_se",
                  "worst signer": "worst_signer"}


def results_table(readme: str) -> dict[str, dict[str, str]]:
    """{variant: {accuracy.json key: figure as printed}} from the table under the README's "## Results"."""
    section = re.search(r"^## +Results\b.*?$(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert section, 'README.md has no "## Results" section'
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.group(1).splitlines() if line.strip().startswith("|")]
    header, body = rows[0], rows[2:]
    table = {}
    for row in body:
        variant = re.search(r"`([^`]+)`", row[0]).group(1)
        table[variant] = {key: row[header.index(column)].strip("*")
                          for column, key in RESULT_COLUMNS.items() if column in header}
    return table


def test_readme_results_are_the_committed_metrics():
    shown = results_table(README.read_text(encoding="utf-8"))
    metrics = json.loads((REPO / "metrics" / "accuracy.json").read_text(encoding="utf-8"))
    assert set(shown) == set(metrics), "the README's results table should have a row per variant"
    expected = {variant: {key: f"{metrics[variant][key]:.3f}" for key in RESULT_COLUMNS.values()}
                for variant in metrics}
    assert shown == expected, "README.md's results table differs from metrics/accuracy.json (dvc repro's)"


def test_every_docs_page_links_back_to_the_readme():
    for page in doc_files()[1:]:
        targets = [target.partition("#")[0] for _, target in links(page.read_text(encoding="utf-8"))]
        assert "../README.md" in targets, f"{page.relative_to(REPO)} has no link back to README.md"


# --- the checks themselves fail when they should ------------------------------------------------------------


def test_github_slugs():
    assert slug("Motion letters: J and Z") == "motion-letters-j-and-z"
    assert slug("Training beyond one signer (with Kaggle access)") == "training-beyond-one-signer-with-kaggle-access"
    assert slug("Read the hand, not the room") == "read-the-hand-not-the-room"
    assert slug("`dvc exp run` and **bold** and [a link](x.md)") == "dvc-exp-run-and-bold-and-a-link"
    assert slug("snake_case stays") == "snake_case-stays"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n### A\n") == {"a", "a-1", "a-2"}


def test_broken_links_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "img.png").write_bytes(b"")
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Two words\n\n## Two words\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Front\n\n"
        "[ok](docs/page.md) [ok](docs/page.md#two-words) [ok](docs/page.md#two-words-1) ![ok](img.png)\n"
        "[ok](#front) [external](https://example.org/missing) `[in code](missing.md)`\n"
        "```\n[in a block](missing.md)\n```\n"
        "[no file](docs/missing.md) ![no image](docs/missing.png)\n"
        "[no anchor](docs/page.md#three-words) [no\nanchor here](#back)\n"
        "[outside](../elsewhere.md)\n",
        encoding="utf-8",
    )
    (tmp_path / "elsewhere.md").write_text("", encoding="utf-8")
    problems = broken_links(readme, root=tmp_path)
    assert [p.split(": ")[1] for p in problems] == [
        "docs/missing.md", "docs/missing.png", "docs/page.md#three-words", "#back", "../elsewhere.md",
    ], problems


SETUP = "# x\n\n## Set-up: two commands\n\n```bash\nmake pipeline   # dvc repro\nmake test       # pytest\n```\n"
CI = "#!/usr/bin/env bash\nset -euo pipefail\ncd x\nif [ -x y ]; then\n    apt-get install -y z\nfi\nmake test\n"
MAKEFILE = (
    "PYTEST = python -m pytest -n auto\n\n"
    "pipeline: setup\n\tPATH=x dvc repro\n\n"
    "test: setup\n\t$(PYTEST)\n\n"
    "test-fast: setup\n\t$(PYTEST) -m 'not slow'\n\n"
    "bench: setup\n\tpython benchmarks/run.py\n"
)


def test_setup_check_agrees_with_itself():
    assert ci_commands(CI) == ["make test"]
    assert check_setup(SETUP, CI, MAKEFILE) == []


@pytest.mark.parametrize("readme, ci, makefile, problem", [
    (SETUP.replace("make test ", "make test-fast "), CI, MAKEFILE, "not a set-up command of README.md"),
    (SETUP, CI.replace("make test", "make test-fast"), MAKEFILE, "not a set-up command of README.md"),
    (SETUP, CI + "make lint\n", MAKEFILE, ".ci/run should run one command"),
    (SETUP.replace("make pipeline", "make bench"), CI, MAKEFILE, "does not run `dvc repro`"),
    (SETUP, CI, MAKEFILE.replace("PATH=x dvc repro", "dvc status"), "does not run `dvc repro`"),
    (SETUP, CI, MAKEFILE.replace("$(PYTEST)\n\ntest-fast", "true\n\ntest-fast"), "does not run pytest"),
    (SETUP.replace("make pipeline   # dvc repro\n", ""), CI, MAKEFILE, "should hold two commands"),
])
def test_setup_check_fails_on_drift(readme, ci, makefile, problem):
    problems = check_setup(readme, ci, makefile)
    assert any(problem in p for p in problems), problems
