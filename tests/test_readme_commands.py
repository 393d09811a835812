"""The README's commands name what exists: every ``python tools/X.py`` (or any other script)
is a file of the repository and each ``--flag`` it is given is defined in that script's source
(or in the ``fairseq_flea`` modules it imports; its ``--help`` output as a last resort), each
``--config-dir D --config-name N`` names ``D/N.yaml`` and each override of a ``task.``,
``model.``, ... key names a key of that yaml, each ``make T`` names a Makefile target, and each
``bench/...`` or ``tools/...`` path exists. The README stays a user's guide: at most 15,000
characters, no commit ids, no dates, and its relative links resolve.

Reads files only (no tool is imported or run unless a flag is missing from its source), so it
takes well under a second.
"""

import ast
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MAX_CHARACTERS = 15_000
SHELL_BLOCK = re.compile(r"^```(?:sh|bash|shell|console)[ \t]*\n(.*?)^```", re.M | re.S)
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.M | re.S)
PYTHONS = {"python", "python3", ".venv/bin/python", "$PYTHON"}
# A commit id as git abbreviates or prints it: 7-40 lowercase hex digits with at least one
# digit and one letter (so neither a plain number nor a word such as "defaced").
HEX_RUN = re.compile(r"(?<![0-9A-Za-z_])[0-9a-f]{7,40}(?![0-9A-Za-z_])")
DATE = re.compile(r"(?<!\d)(?:19|20)\d\d-[01]\d(?:-[0-3]\d)?(?!\d)")
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def shell_commands(text: str) -> Iterator[List[str]]:
    """Each simple command of the README's sh/bash blocks as its words, comments and line
    continuations resolved, split at ``;``, ``&&``, ``|`` and the like."""
    for block in SHELL_BLOCK.findall(text):
        joined = re.sub(r"\\\n", " ", block)
        for line in joined.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: List[str] = []
            for word in lexer:
                if word in SEPARATORS:
                    if command:
                        yield command
                    command = []
                else:
                    command.append(word)
            if command:
                yield command


def without_environment(command: List[str]) -> List[str]:
    """The command after leading ``NAME=value`` assignments."""
    index = 0
    while index < len(command) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", command[index]):
        index += 1
    return command[index:]


def flags(words: List[str]) -> List[str]:
    return [word.split("=", 1)[0] for word in words if word.startswith("--") and len(word) > 2]


def module_file(module: str):
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def imported_sources(path: Path) -> str:
    """``path``'s source and that of every ``fairseq_flea`` module it imports, transitively."""
    seen: Set[Path] = set()
    pending = [path]
    sources = []
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        source = current.read_text(encoding="utf-8")
        sources.append(source)
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.split(".")[0] == "fairseq_flea":
                    found = module_file(name)
                    if found is not None:
                        pending.append(found)
    return "\n".join(sources)


@lru_cache(maxsize=None)
def help_output(script: Path) -> str:
    python = REPO / ".venv" / "bin" / "python"
    completed = subprocess.run([str(python if python.exists() else sys.executable), str(script), "--help"],
                               cwd=REPO, capture_output=True, text=True, timeout=120)
    return completed.stdout + completed.stderr


def flag_is_defined(script: Path, flag: str, run_help: bool = True) -> bool:
    source = imported_sources(script)
    if f'"{flag}"' in source or f"'{flag}'" in source:
        return True
    return run_help and re.search(rf"{re.escape(flag)}(?![\w-])", help_output(script)) is not None


@lru_cache(maxsize=None)
def make_targets() -> Set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {target for line in re.findall(r"(?m)^([^\s#:=][^:=]*):(?!=)", text) for target in line.split()}


@lru_cache(maxsize=None)
def config_keys(config: Path) -> Dict[str, Set[str]]:
    """The keys of each section of a hydra yaml (``task`` -> {"data", "fast_paths", ...}),
    nested sections as dotted paths."""
    def walk(mapping, prefix: str, keys: Set[str]) -> None:
        for key, value in mapping.items():
            keys.add(prefix + str(key))
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.", keys)

    keys: Set[str] = set()
    walk(yaml.safe_load(config.read_text(encoding="utf-8")) or {}, "", keys)
    return keys


def option_value(command: List[str], option: str):
    for index, word in enumerate(command):
        if word == option and index + 1 < len(command):
            return command[index + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def command_problems(command: List[str], run_help: bool = True) -> List[str]:
    command = without_environment(command)
    if not command:
        return []
    shown = " ".join(command)
    problems = []
    for word in command:
        if re.match(r"(bench|tools|recipes|config)/", word) and not any(c in word for c in "*?$<>"):
            if not (REPO / word).exists():
                problems.append(f"{shown}: {word} does not exist")
    program = command[0]
    if program in PYTHONS and len(command) > 1 and command[1].endswith(".py"):
        script = REPO / command[1]
        if not script.is_file():
            problems.append(f"{shown}: {command[1]} does not exist")
        else:
            for flag in flags(command[2:]):
                if flag in ("--config-dir", "--config-name") and "REMAINDER" in script.read_text(encoding="utf-8"):
                    continue  # handed on to fairseq-hydra-train
                if not flag_is_defined(script, flag, run_help):
                    problems.append(f"{shown}: {command[1]} has no option {flag}")
    elif program in ("bash", "sh") and len(command) > 1:
        if not (REPO / command[1]).is_file():
            problems.append(f"{shown}: {command[1]} does not exist")
    elif program == "make":
        for target in command[1:]:
            if target.startswith("-") or "=" in target:
                continue
            if target not in make_targets():
                problems.append(f"{shown}: the Makefile has no target {target!r}")
    config_dir, config_name = option_value(command, "--config-dir"), option_value(command, "--config-name")
    if config_dir and config_name:
        config = REPO / config_dir / f"{config_name}.yaml"
        if not config.is_file():
            problems.append(f"{shown}: {config_dir}/{config_name}.yaml does not exist")
        elif program == "fairseq-hydra-train":
            known = config_keys(config)
            for word in command[1:]:
                match = re.fullmatch(r"([a-z_]+(?:\.[a-z_]+)+)=.*", word)
                if match and match.group(1) not in known:
                    problems.append(f"{shown}: {config_name}.yaml has no key {match.group(1)} (it would need a '+')")
    return problems


def test_readme_is_short():
    assert len(readme_text()) <= MAX_CHARACTERS, f"README.md has {len(readme_text())} characters"


def test_readme_has_no_commit_ids_or_dates():
    text = readme_text()
    commit_like = [run for run in HEX_RUN.findall(text) if re.search(r"\d", run) and re.search(r"[a-f]", run)]
    assert not commit_like, f"commit-id-like strings in README.md: {commit_like}"
    assert not DATE.findall(text), f"dates in README.md: {DATE.findall(text)}"


def test_readme_has_commands():
    commands = list(shell_commands(readme_text()))
    programs = {without_environment(command)[0] for command in commands if without_environment(command)}
    assert {"make", "python", "fairseq-hydra-train"} <= programs, programs


@pytest.mark.parametrize("command", list(shell_commands(readme_text())), ids=lambda c: " ".join(c)[:80])
def test_readme_command_names_what_exists(command):
    assert command_problems(command) == []


def test_readme_python_imports_exist():
    for block in PYTHON_BLOCK.findall(readme_text()):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fairseq_flea"):
                path = module_file(node.module)
                assert path is not None, node.module
                for alias in node.names:
                    assert re.search(rf"\b{alias.name}\b", path.read_text(encoding="utf-8")), (node.module, alias.name)


def github_anchor(heading: str) -> str:
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def test_readme_links_resolve():
    text = readme_text()
    anchors = {github_anchor(heading) for heading in re.findall(r"(?m)^#+\s+(.*)$", text)}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (REPO / path).exists(), f"README.md links to {path}, which does not exist"
        elif anchor:
            assert anchor in anchors, f"README.md links to #{anchor}, no such heading"


def test_the_checks_catch_what_they_should():
    assert command_problems(["python", "tools/no_such_tool.py"])
    assert command_problems(["python", "tools/predict.py", "CKPT", "a.wav", "--no-such-flag"], run_help=False)
    assert command_problems(["make", "no-such-target"])
    assert command_problems(["fairseq-hydra-train", "--config-dir", "config/pretrain", "--config-name", "nope"])
    assert command_problems(["fairseq-hydra-train", "--config-dir", "config/pretrain", "--config-name", "tapt_base",
                             "task.no_such_key=1"])
    assert command_problems(["bash", "bench/no_such_check.sh"])
    assert not command_problems(["python", "tools/prepare_iemocap.py", "ROOT", "OUT", "--pretrain-splits"])
    words = list(shell_commands("```sh\nA=1 make demo && python tools/x.py --y  # z\n```\n"))
    assert words == [["A=1", "make", "demo"], ["python", "tools/x.py", "--y"]]
    assert [run for run in HEX_RUN.findall("at 5c0c351, 1600000 defaced") if re.search(r"\d", run)
            and re.search(r"[a-f]", run)] == ["5c0c351"]
