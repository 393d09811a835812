"""Emotion recognition with a fine-tuned ``ser_attention_classification`` checkpoint."""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from fairseq_flea.audio import read_mono_audio
from fairseq_flea.checkpoints import checkpoint_model_name, load_checkpoint_state
from fairseq_flea.errors import FleaInputError
from fairseq_flea.hubert_features import length_sorted_batches, pad_waveforms

CLASSIFIER_MODEL = "ser_attention_classification"
FRAME_SECONDS = 0.02


@dataclass
class UtterancePrediction:
    probabilities: np.ndarray  # one per class, in EmotionRecognizer.class_names order
    frame_weights: np.ndarray  # pooling weight of each 20 ms frame (attention, or 1/N for mean)

    def predicted_index(self) -> int:
        return int(np.argmax(self.probabilities))


class EmotionRecognizer:
    """Loads a fine-tuned checkpoint once; predicts class probabilities and frame weights."""

    def __init__(self, model, class_names: List[str], sample_rate: int, normalize: bool, device: torch.device):
        self.model = model.eval().to(device)
        self.class_names = class_names
        self.sample_rate = sample_rate
        self.normalize = normalize
        self.device = device

    @classmethod
    def load(cls, checkpoint_path: str, device: Optional[torch.device] = None) -> "EmotionRecognizer":
        from fairseq import checkpoint_utils

        state = load_checkpoint_state(checkpoint_path)
        model_name = checkpoint_model_name(state)
        if model_name != CLASSIFIER_MODEL:
            raise FleaInputError(
                f"{checkpoint_path}: not an emotion classifier (its model is {model_name or 'unknown'!r}, "
                f"expected {CLASSIFIER_MODEL!r})"
            )
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint_path], state=state)
        device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return cls(models[0], list(task.class_names), int(cfg.task.sample_rate), bool(cfg.task.normalize), device)

    @torch.no_grad()
    def predict_waveforms(
        self, waveforms: Sequence[Union[np.ndarray, torch.Tensor]], batch_seconds: float = 100.0
    ) -> List[UtterancePrediction]:
        """Predictions for mono waveforms at ``self.sample_rate``, in input order."""
        prepared = [self._prepare(waveform) for waveform in waveforms]
        predictions: List[Optional[UtterancePrediction]] = [None] * len(prepared)
        max_batch_samples = int(batch_seconds * self.sample_rate)
        for batch in length_sorted_batches([len(w) for w in prepared], max_batch_samples):
            source, lengths = pad_waveforms([prepared[i] for i in batch])
            output = self.model(source=source, lengths=lengths)
            probabilities = torch.softmax(output["logits"].float(), dim=-1).cpu().numpy()
            for row, index in enumerate(batch):
                valid = ~output["padding_mask"][row]
                predictions[index] = UtterancePrediction(
                    probabilities=probabilities[row],
                    frame_weights=output["frame_weights"][row][valid].float().cpu().numpy(),
                )
        return predictions

    def predict_files(self, paths: Sequence[str], batch_seconds: float = 100.0) -> List[UtterancePrediction]:
        return self.predict_waveforms([read_mono_audio(p, self.sample_rate) for p in paths], batch_seconds)

    def _prepare(self, waveform: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        waveform = torch.as_tensor(waveform, dtype=torch.float32).to(self.device)
        return F.layer_norm(waveform, waveform.shape) if self.normalize else waveform
