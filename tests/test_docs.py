"""The documentation is true: the site builds in strict mode, every shell and Python example in
docs/ and the README runs, and the CLI reference shows what ``annbench COMMAND --help`` says.

Examples run as a reader would run them: each ```bash block line by line (a line ending in
``\\`` continues) in a temporary working folder, with ``ANNBENCH_RESULTS`` / ``ANNBENCH_DATA``
pointing at temporary folders and the venv's ``bin`` first on ``PATH``; each ```python block as
a script with the venv's Python in the same folder. A block whose first line is a comment
naming a file (``# my-runbook.yaml``) is written to that file first. A plain ``annbench ...``
command (no pipe, redirection, variable or glob) runs in this process through click's
CliRunner, in the same folder with the same annbench variables, which spares a Python start-up
per command; anything else runs in bash. Pages run in the site's navigation order (the README
first), each page's blocks sharing one results store (a store shared between pages would turn
a later page's sweep into a resume of an earlier one's); the data folder is shared, so a
built-in dataset is generated once. Every command must exit 0, except that ``annbench
recommend`` may exit 3, its documented "nothing fits" answer. A block that must not run is
marked with ``<!-- not run: REASON -->`` on the line before its fence, and is listed in
NOT_RUN below, so leaving an example out is a deliberate change.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from annbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent  # the venv's python runs the tests
MKDOCS = BIN / "mkdocs"
#: seconds one example command may take
COMMAND_TIMEOUT = 600

#: Every block left out, as (page, reason): a new one must be added here on purpose.
NOT_RUN = [
    ("README.md", "creates a virtualenv in the checkout"),
    (
        "README.md",
        "creates a virtualenv and installs every extra, then runs the complete test suite",
    ),
    ("getting-started.md", "creates a virtualenv in the checkout"),
    ("guides/compare-backends.md", "needs a Chromium browser"),
    (
        "guides/own-embeddings.md",
        "loads torch and an embedding model (the embed extra), about 30 s before the first text",
    ),
    ("guides/dask.md", "starts a long-running Dask worker that needs a scheduler at HOST"),
    (
        "guides/scale.md",
        "draws 1,000,000 x 384 vectors with their ground truth, about 3 minutes on 2 cores",
    ),
    ("guides/plugin.md", "a plugin's own test file, importing the plugin package"),
    ("guides/plugin.md", "installs a package into the environment"),
    ("reference/datasets.md", "embeds 22,000 texts, about 11 minutes with the embed extra"),
    ("contributing.md", "creates a virtualenv and installs every extra"),
]

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
NOT_RUN_MARK = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.+?)\s*-->\s*$")
FILE_LINE = re.compile(r"^#\s*(?P<name>[\w.-]+\.(?:ya?ml|toml|txt|json|csv|tsv))\s*$")
#: commands whose documented answer may be a non-zero status: recommend's "nothing fits"
ALLOWED_STATUS = {"annbench recommend": {0, 3}}
#: characters that make a command's word something only a shell can run (a pipe, redirection,
#: variable, glob, subshell or home folder): such a command runs in bash, not in-process
SHELL_CHARACTERS = frozenset("|&;<>()$`*?[]{}~!\\")


@dataclass(frozen=True)
class Block:
    page: str  # path relative to docs/, or README.md
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    not_run: str | None  # the reason given, when marked


def pages() -> list[str]:
    """README.md, then the site's pages in navigation order."""

    def walk(item: object) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, dict):
            return [page for value in item.values() for page in walk(value)]
        if isinstance(item, list):
            return [page for value in item for page in walk(value)]
        return []

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    return ["README.md", *walk(nav)]


def page_path(page: str) -> Path:
    return ROOT / page if page == "README.md" else DOCS / page


def blocks(page: str) -> list[Block]:
    """The fenced code blocks of a page, with the not-run reason marked before each."""
    lines = page_path(page).read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = len(opening["indent"]), opening["lang"]
        end = i + 1
        while end < len(lines) and not (
            FENCE.match(lines[end]) and not FENCE.match(lines[end])["lang"]
        ):
            end += 1
        body = "\n".join(line[indent:] for line in lines[i + 1 : end])
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = NOT_RUN_MARK.match(before)
        found.append(Block(page, i + 1, lang, body, mark["reason"] if mark else None))
        i = end + 1
    return found


def commands(script: str) -> list[str]:
    """A bash block's commands: one per line, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in script.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            out.append(command)
    return out


def example_env(work: Path, data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANNBENCH_RESULTS=str(work / "results"),
        ANNBENCH_DATA=str(data),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MPLBACKEND="Agg",
        NO_MKDOCS_2_WARNING="1",
    )
    return env


def in_process_args(command: str) -> list[str] | None:
    """The arguments after ``annbench`` of a plain ``annbench ...`` command, which CliRunner can
    run in this process; None for anything that needs a shell."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # unbalanced quotes: let bash say what is wrong
        return None
    if not words or words[0] != "annbench":
        return None
    if any(SHELL_CHARACTERS.intersection(word) for word in words):
        return None
    return words[1:]


def run_annbench(
    args: list[str], where: str, work: Path, env: dict[str, str], allowed: set[int]
) -> None:
    """``annbench ARGS`` through CliRunner, in ``work`` with ``env``'s annbench variables, as
    the ``annbench`` script would run it."""
    changed = {key: value for key, value in env.items() if os.environ.get(key) != value}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in changed.items():
            patch.setenv(key, value)
        patch.chdir(work)
        result = CliRunner().invoke(main, args, prog_name="annbench")
    if result.exit_code not in allowed:
        error = result.exception
        trace = (
            "".join(traceback.format_exception(error))
            if error is not None and not isinstance(error, SystemExit)
            else ""
        )
        pytest.fail(
            f"{where} exited {result.exit_code} (run in-process):\nannbench {shlex.join(args)}\n"
            f"--- output (end) ---\n{result.output[-3000:]}\n{trace[-3000:]}",
            pytrace=False,
        )


def run_example(argv: list[str], where: str, work: Path, env: dict[str, str], allowed: set[int]):
    done = subprocess.run(
        argv, cwd=work, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if done.returncode not in allowed:
        pytest.fail(
            f"{where} exited {done.returncode}:\n{argv[-1]}\n"
            f"--- stdout (end) ---\n{done.stdout[-3000:]}\n--- stderr (end) ---\n"
            f"{done.stderr[-3000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for every page, so built-in datasets are generated once."""
    return tmp_path_factory.mktemp("docs-data")


#: What the built site is made from: a change to any of these builds it again.
SITE_SOURCES = ("mkdocs.yml", "README.md", "docs", "annbench")
#: Distributions whose versions change the built site.
SITE_TOOLS = (
    "mkdocs",
    "mkdocs-material",
    "mkdocs-click",
    "mkdocs-autorefs",
    "mkdocstrings",
    "mkdocstrings-python",
    "griffelib",
    "click",
)


def site_key() -> str:
    """A hash of every file the site is built from (pages, configuration, the code whose
    docstrings and click commands it shows) and of the tools' versions."""
    digest = hashlib.sha256()
    for name in SITE_SOURCES:
        top = ROOT / name
        files = sorted(top.rglob("*")) if top.is_dir() else [top]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    for tool in SITE_TOOLS:
        try:
            digest.update(f"{tool}=={metadata.version(tool)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{tool} missing\n".encode())
    return digest.hexdigest()[:32]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The site built in strict mode: a broken link, anchor or reference fails the build. A
    strict build of the same sources (``site_key``) is kept in pytest's cache folder and
    used again (``pytest --cache-clear`` forgets it)."""
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    key = site_key()
    kept = cache.mkdir("annbench-site") / key if cache is not None else None
    if kept is not None and (kept / "index.html").is_file():
        return kept
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    if kept is None or key != site_key():  # the sources changed while it was being built
        return out
    for old in kept.parent.iterdir():  # keep one build: the sources' latest
        shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(out, kept.with_name(f".{key}.partial"))
    kept.with_name(f".{key}.partial").rename(kept)
    return kept


@pytest.mark.slow
def test_site_builds_strictly(site: Path):
    for page in pages()[1:]:
        built = site / page.removesuffix(".md") / "index.html"
        if page == "index.md":
            built = site / "index.html"
        assert built.is_file(), f"{page} was not built"
    assert "annbench run" in (site / "reference/cli/index.html").read_text(encoding="utf-8")
    api = (site / "reference/api/index.html").read_text(encoding="utf-8")
    for name in ("annbench.api.run", "annbench.index.Index", "check_backend", "RunRecord"):
        assert name in api, f"the API reference lacks {name}"


def test_every_page_is_in_the_navigation():
    listed = set(pages())
    for path in DOCS.rglob("*.md"):
        page = path.relative_to(DOCS).as_posix()
        assert page in listed, f"docs/{page} is not in mkdocs.yml's nav"


def test_readme_links_resolve():
    """The README's relative links (into docs/) point at files that exist, as on GitHub."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def test_blocks_left_out_are_the_listed_ones():
    marked = [(b.page, b.not_run) for page in pages() for b in blocks(page) if b.not_run]
    assert sorted(marked) == sorted(NOT_RUN), (
        "Blocks marked '<!-- not run: ... -->' differ from NOT_RUN; a block left out must be "
        f"listed on purpose. Marked now: {marked}"
    )
    for page in pages():
        for block in blocks(page):
            if block.not_run and block.lang not in ("bash", "python"):
                pytest.fail(f"{page}:{block.line} marks a {block.lang or 'plain'} block not run")


def test_examples_are_fenced_with_a_language():
    """Shell and Python examples must say so, or they would silently not run."""
    for page in pages():
        for block in blocks(page):
            first = block.text.lstrip()
            looks_run = first.startswith(("annbench ", "import annbench", "python"))
            assert not (block.lang in ("", "sh", "shell", "console") and looks_run), (
                f"{page}:{block.line}: fence it as ```bash or ```python (or ```text for output)"
            )


@pytest.mark.slow
@pytest.mark.parametrize("page", pages())
def test_examples_run(page: str, tmp_path: Path, data_folder: Path):
    work = tmp_path / "work"
    work.mkdir()
    env = example_env(work, data_folder)
    for n, block in enumerate(blocks(page)):
        where = f"{page}:{block.line}"
        name = FILE_LINE.match(block.text.splitlines()[0]) if block.text.strip() else None
        if name and block.lang not in ("bash", "python"):
            (work / name["name"]).write_text(block.text + "\n", encoding="utf-8")
        if block.not_run:
            continue
        if block.lang == "bash":
            for command in commands(block.text):
                allowed = next(
                    (s for prefix, s in ALLOWED_STATUS.items() if command.startswith(prefix)),
                    {0},
                )
                args = in_process_args(command)
                if args is not None:
                    run_annbench(args, where, work, env, allowed)
                    continue
                run_example(
                    ["bash", "-c", f"set -o pipefail; {command}"], where, work, env, allowed
                )
        elif block.lang == "python":
            script = work / f"example_{n}.py"
            script.write_text(block.text + "\n", encoding="utf-8")
            run_example([sys.executable, script.name], where, work, env, {0})


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = [(path, group)]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def _section(text: str, title: str) -> str:
    """The lines under ``title:`` in click's help text, up to the blank line that ends it."""
    out, inside = [], False
    for line in text.splitlines():
        if line.strip() == f"{title}:" and not line.startswith(" "):
            inside = True
            continue
        if inside and not line.strip():
            break
        if inside:
            out.append(line)
    return "\n".join(out)


def _option_names(options: str) -> list[str]:
    return re.findall(r"^ {2}(?:-\w, )?(--[\w-]+)", options, flags=re.M)


@pytest.mark.slow
def test_cli_reference_matches_help(site: Path):
    """Each command's usage, options (with their help) and subcommands in the built CLI
    reference are what ``annbench ... --help`` prints."""
    page = (site / "reference/cli/index.html").read_text(encoding="utf-8")
    runner = CliRunner()
    for path, command in _commands(main):
        anchor = "-".join(("annbench", *path))
        start = page.find(f'id="{anchor}"')
        assert start >= 0, f"the CLI reference has no section for annbench {' '.join(path)}"
        following = re.search(r'<h\d id="annbench-', page[start + 1 :])
        section = page[start : start + 1 + following.start() if following else len(page)]
        blocks_ = [
            html.unescape(re.sub(r"<[^>]+>", "", b))
            for b in re.findall(r"<pre><span></span><code>(.*?)</code></pre>", section, flags=re.S)
        ]
        help_text = runner.invoke(main, [*path, "--help"], prog_name="annbench", terminal_width=80)
        assert help_text.exit_code == 0, help_text.output
        usage = help_text.output.splitlines()[0].removeprefix("Usage: ").strip()
        options = _section(help_text.output, "Options")
        where = f"annbench {' '.join(path)}".strip()
        assert blocks_ and blocks_[0].strip() == usage, f"{where}: usage differs"
        shown = blocks_[1].rstrip() if len(blocks_) > 1 else ""
        assert _option_names(shown) == _option_names(options), f"{where}: options differ"
        # the same words; click may wrap them at another width (and break at another hyphen)
        assert "".join(shown.split()) == "".join(options.split()), f"{where}: option help differs"
        if isinstance(command, click.Group):
            listed = re.findall(rf'href="#{anchor}-([\w-]+)"', section)
            assert sorted(set(listed)) == sorted(command.commands), f"{where}: subcommands differ"


def test_plain_annbench_commands_run_in_process_and_the_rest_in_bash():
    assert in_process_args("annbench run -b hnswlib -g M=16 -g 'ef=16,64'  # two settings") == [
        *["run", "-b", "hnswlib", "-g", "M=16", "-g", "ef=16,64"],
    ]
    for command in (
        "annbench recommend -d tiny --emit python > pick.py",
        "annbench results | head",
        "ANNBENCH_DATA=/data annbench datasets list",
        "annbench datasets info $NAME",
        "annbench run -b all && annbench summary",
        "python pick.py",
        "annbench run -d 'unbalanced",
    ):
        assert in_process_args(command) is None, command


def test_the_kept_site_is_built_again_when_a_source_changes(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# annbench\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: annbench\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "SITE_SOURCES", ("mkdocs.yml", "docs"))
    key = site_key()
    assert site_key() == key
    (tmp_path / "docs" / "index.md").write_text("# annbench, changed\n")
    changed = site_key()
    assert changed != key
    (tmp_path / "docs" / "new.md").write_text("")
    assert site_key() not in (key, changed)
