"""A fine-tuned classifier's inference checkpoint: weights, label dictionary and config,
loadable with ``load_model_ensemble_and_task``; no optimizer state, no encoder path."""

from fairseq_flea.hubert.checkpoints import checkpoint_model_name, load_checkpoint_state
from fairseq_flea.hubert.conversion import save_fairseq_checkpoint
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.models.ser_attention_classification import CLASSIFIER_MODEL


def classifier_to_inference(source_path: str, output_path: str) -> None:
    """Keep a fine-tuned classifier's weights, label dictionary and config; drop the rest."""
    state = load_checkpoint_state(source_path)
    if checkpoint_model_name(state) != CLASSIFIER_MODEL:
        raise FleaInputError(
            f"{source_path}: not a fine-tuned emotion classifier (model "
            f"{checkpoint_model_name(state) or 'unknown'!r}, expected {CLASSIFIER_MODEL!r})"
        )
    cfg = {section: state["cfg"][section] for section in ("common", "task", "model", "criterion") if section in state["cfg"]}
    save_fairseq_checkpoint(output_path, cfg, state["model"], task_state=state.get("task_state"))
