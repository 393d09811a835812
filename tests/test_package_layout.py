"""The package's layers: every import of fairseq_flea by fairseq_flea runs downward."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "fairseq_flea"
# Lowest first. A sub-package may import its own modules and those of lower layers only.
LAYERS = [
    {"io"},
    {"corpus", "hubert", "launch", "optim"},
    {"tasks", "models", "criterions"},
    {"units"},
    {"inference"},
    {"export"},
    {"evaluation"},
    {"recipe"},
    {"demo"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def imported_subpackages(path: Path):
    """(line, sub-package) of every fairseq_flea import in a module, lazy ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fairseq_flea":
            parts = node.module.split(".")
            targets = [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("fairseq_flea.")]
        else:
            continue
        for target in targets:
            yield node.lineno, target


def test_every_sub_package_has_a_layer_and_says_what_it_owns():
    sub_packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert sub_packages == set(RANK)
    assert [path.name for path in PACKAGE.glob("*.py")] == ["__init__.py"]
    for name in sub_packages:
        docstring = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert docstring and "import" in docstring.lower(), name


def test_imports_only_run_downward():
    upward = []
    for path in PACKAGE.glob("*/*.py"):
        own = path.parent.name
        for line, target in imported_subpackages(path):
            if target != own and RANK[target] >= RANK[own]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports fairseq_flea.{target}")
    assert not upward, "\n".join(upward)


LIGHT_TOOLS = [
    "prepare_iemocap.py", "prepare_corpus.py", "check_leakage.py", "make_demo_corpus.py", "dump_mfcc_feature.py",
    "learn_kmeans.py", "dump_km_label.py", "merge_km_labels.py", "aggregate_results.py",
]
LOADED_AFTER = (
    "import runpy, sys\n"
    "sys.argv = [sys.argv[1], '--help']\n"
    "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
    "print(sorted({'fairseq', 'torch'} & set(sys.modules)))\n"
)


@pytest.mark.parametrize("tool", LIGHT_TOOLS)
def test_a_tool_that_loads_no_model_starts_without_fairseq_or_torch(tool):
    result = subprocess.run(
        [sys.executable, "-c", LOADED_AFTER, str(REPO_ROOT / "tools" / tool)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "[]"


def test_importing_fairseq_after_the_plugin_registers_it():
    probe = (
        "import fairseq_flea.units.kmeans\n"
        "from fairseq.tasks import TASK_REGISTRY\n"
        "from fairseq.models import MODEL_REGISTRY\n"
        "from fairseq.criterions import CRITERION_REGISTRY\n"
        "print({'emotion_classification', 'emotion_hubert_pretraining'} <= set(TASK_REGISTRY),\n"
        "      'ser_attention_classification' in MODEL_REGISTRY, 'emotion_cross_entropy' in CRITERION_REGISTRY)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True", "True"]
