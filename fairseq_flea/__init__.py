"""fairseq-flea: frame-level emotional state alignment (FLEA) as a fairseq plugin.

Importing this package registers its tasks, models, criterions and optimizer with fairseq (and lets
torch>=2.6 load fairseq checkpoints without switching torch's safe-loading check off) as
soon as fairseq itself is loaded: at once when it already is (``fairseq-hydra-train``
imports its ``common.user_dir`` after fairseq), otherwise when something imports it later.
Tools that never touch fairseq (manifests, k-means, labels) so start without fairseq or torch.
"""

import importlib.abc
import importlib.util
import logging
import sys
import warnings

# fairseq's HubertModel builds its positional convolution with torch's deprecated weight_norm;
# the warning is fairseq's to fix and would bury our one-line errors.
warnings.filterwarnings("ignore", message=r".*torch\.nn\.utils\.weight_norm.*", category=FutureWarning)


def register() -> None:
    """Register the plugin with fairseq (repeating it changes nothing: modules import once)."""
    from fairseq_flea.hubert.checkpoints import allow_fairseq_checkpoint_types

    allow_fairseq_checkpoint_types()
    from fairseq_flea import criterions, models, optim, tasks  # noqa: F401  (registers with fairseq on import)


def import_without_logging_side_effects(exec_module, module) -> None:
    """Import fairseq without what its import does to logging: some of its modules call
    logging.basicConfig (one at DEBUG level) and log at import, which would print library
    noise above a tool's one-line error. The caller's logging stays as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)  # "install tensorboardX"
    exec_module(module)
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


class _RegisterWhenFairseqLoads(importlib.abc.MetaPathFinder):
    """Calls ``register`` once fairseq is loaded and no module of ours is half-imported:
    registering imports our modules, and one of them may be what is importing fairseq."""

    def __init__(self) -> None:
        self.modules_of_ours_importing = 0
        self.fairseq_loaded = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "fairseq" and not fullname.startswith(f"{__name__}."):
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader.exec_module = self.watched(spec.loader.exec_module, is_fairseq=fullname == "fairseq")
        return spec

    def watched(self, exec_module, is_fairseq: bool):
        def exec_and_maybe_register(module) -> None:
            self.modules_of_ours_importing += not is_fairseq
            try:
                if is_fairseq:
                    import_without_logging_side_effects(exec_module, module)
                else:
                    exec_module(module)
            finally:
                self.modules_of_ours_importing -= not is_fairseq
            self.fairseq_loaded |= is_fairseq
            if self.fairseq_loaded and self.modules_of_ours_importing == 0 and self in sys.meta_path:
                sys.meta_path.remove(self)
                register()

        return exec_and_maybe_register


if "fairseq" in sys.modules:
    register()
else:
    sys.meta_path.insert(0, _RegisterWhenFairseqLoads())
