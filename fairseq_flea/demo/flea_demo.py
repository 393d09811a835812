"""``make demo``: every FLEA phase on a generated corpus, on CPU, in minutes.

No IEMOCAP and no released HuBERT are on a fresh machine, so the demo
1. synthesises a toy emotional-speech corpus (``fairseq_flea.corpus.demo_corpus``),
2. writes its folds (the recipe's stage 0; fold 4 is the demo split: Session 4 held out),
3. trains the stand-in for the released model: a tiny HuBERT from scratch on MFCC k-means
   labels of fold 4's training sessions (HuBERT iteration 1), and a k-means model of one
   of its layers (the stand-in for hubert_base_ls960_L9_km500.bin),
4. runs the recipe's stages 1-5 on fold 4 with the tiny configs (TAPT, mean-pooling
   fine-tuning, pseudo-emotion labels, CPT, FLEA fine-tuning with both poolings,
   evaluation on the test speaker),
5. prints UA/WA per phase, and EDER and attention in span against the corpus's known
   emotional spans (``spans.json``), and draws the attention over time of partial
   utterances with their known span shaded and the predicted emotion segments.
Every step is skipped when its output is complete, so a second run reuses them.
"""

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, List, Sequence

from fairseq_flea.recipe.flea_recipe import FleaRecipe, RecipeConfig, run_step
from fairseq_flea.recipe.local_launcher import LocalLauncher, visible_devices
from fairseq_flea.recipe.processes import hydra_train

logger = logging.getLogger(__name__)

DEMO_FOLD = 4
DEMO_DIRECTION = "FM"  # the demo split: one speaker direction keeps `make demo` short
FRAME_LEVEL_DIR = "eval_test_spans"  # beside each model's eval_test: the scores against the known spans
# hubert_tiny.yaml's model section at HuBERT base size (fairseq's hubert_base_librispeech.yaml).
HUBERT_BASE_ARCHITECTURE = (
    "model.conv_feature_layers='[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2'",
    "model.encoder_layers=12", "model.encoder_embed_dim=768", "model.encoder_ffn_embed_dim=3072",
    "model.encoder_attention_heads=12", "model.conv_pos=128", "model.conv_pos_groups=16", "model.final_dim=256",
)


@dataclass
class DemoConfig:
    work_dir: str = "demo"
    # "tiny" (CPU, minutes) or "base": HuBERT-base size with the recipe's base configs (GPU).
    size: str = "tiny"
    overrides: Sequence[str] = field(default_factory=list)  # every training step, e.g. precision
    utterances_per_speaker: int = 48
    seed: int = 0
    scratch_updates: int = 100  # the stand-in HuBERT's pretraining from scratch
    mfcc_clusters: int = 24
    unit_clusters: int = 24  # k-means of the stand-in (the released model has 500)
    layer: int = 1  # of the tiny model's 2: the units and the pseudo-emotion labels
    pseudo_clusters: int = 8  # K of the pseudo-emotion labels
    pretrain_updates: int = 40  # TAPT and CPT
    finetune_epochs: int = 6


class FleaDemo:
    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.work = os.path.abspath(cfg.work_dir)
        self.corpus = os.path.join(self.work, "corpus")
        self.recipe = FleaRecipe(RecipeConfig(
            work_dir=os.path.join(self.work, "recipe"),
            hubert_checkpoint=os.path.join(self.work, "stand_in", "hubert", "checkpoint_last.pt"),
            hubert_kmeans=os.path.join(self.work, "stand_in", "units", f"kmeans_{cfg.unit_clusters}.bin"),
            corpus_csv=os.path.join(self.corpus, "corpus.csv"),
            folds=[DEMO_FOLD], layers=[cfg.layer], clusters=[cfg.pseudo_clusters],
            poolings=["mean", "attention"], tapt_label_layer=cfg.layer,
            tapt_config=f"tapt_{cfg.size}", cpt_config=f"flea_cpt_{cfg.size}",
            finetune_configs={"mean": f"ser_mean_{cfg.size}", "attention": f"ser_attention_{cfg.size}"},
            overrides=list(cfg.overrides),
            directions=[DEMO_DIRECTION],
            pretrain_overrides=[f"optimization.max_update={cfg.pretrain_updates}"],
            finetune_overrides=[f"optimization.max_epoch={cfg.finetune_epochs}"],
        ))

    def run(self) -> str:
        from fairseq_flea.corpus.demo_corpus import write_demo_corpus

        run_step(0, "demo corpus", self.corpus, lambda: write_demo_corpus(
            self.corpus, seed=self.cfg.seed, utterances_per_speaker=self.cfg.utterances_per_speaker))
        self.recipe.stage0_manifests()
        self.train_stand_in()
        self.recipe.cfg.stage = 1
        self.recipe.run(LocalLauncher(visible_devices(), cpu_jobs=1, log_dir=os.path.join(self.recipe.work, "logs")))
        self.evaluate_frame_level()
        table = self.phase_table()
        self.plot_partial_utterances()
        return table

    def train_stand_in(self) -> None:
        """HuBERT iteration 1 on MFCC k-means labels of the demo fold's training sessions."""
        stand_in = os.path.join(self.work, "stand_in")
        mfcc_labels, hubert, units = (os.path.join(stand_in, name) for name in ("mfcc_labels", "hubert", "units"))
        run_step(0, "stand-in HuBERT: MFCC k-means labels", mfcc_labels, lambda: self.mfcc_labels(mfcc_labels))
        run_step(0, "stand-in HuBERT: pretraining from scratch", hubert,
                 partial(self.pretrain_from_scratch, mfcc_labels, hubert), in_own_process=True)
        run_step(0, f"stand-in HuBERT: k-means of layer {self.cfg.layer}", units, partial(
            self.recipe.layer_frame_labels, DEMO_FOLD, os.path.join(hubert, "checkpoint_last.pt"), self.cfg.layer,
            units, clusters=self.cfg.unit_clusters), in_own_process=True)

    def mfcc_labels(self, label_dir: str) -> None:
        from fairseq_flea.units.mfcc import dump_mfcc_features

        self.recipe.frame_labels(
            DEMO_FOLD, label_dir,
            lambda pretrain_dir, split, feature_dir: dump_mfcc_features(pretrain_dir, split, 1, 0, feature_dir),
            clusters=self.cfg.mfcc_clusters,
            kmeans_backend="sklearn", kmeans_options={"n_init": 3},
        )

    def pretrain_from_scratch(self, label_dir: str, save_dir: str) -> None:
        hydra_train(os.path.join(self.recipe.cfg.config_root, "pretrain"), "hubert_tiny", [
            f"task.data={os.path.join(self.recipe.fold_data(DEMO_FOLD), 'pretrain')}",
            f"task.label_dir={label_dir}", "task.labels=[km]",
            "model.label_rate=100",  # MFCC frames are 10 ms
            f"optimization.max_update={self.cfg.scratch_updates}", f"checkpoint.save_dir={save_dir}",
            *(HUBERT_BASE_ARCHITECTURE if self.cfg.size == "base" else ()), *self.cfg.overrides,
        ], os.path.join(save_dir, "train.log"))

    def model_dirs(self) -> Dict[str, str]:
        grid = self.recipe.grid_dir(DEMO_FOLD, DEMO_DIRECTION, self.cfg.layer, self.cfg.pseudo_clusters)
        return {
            "TAPT, mean pooling": os.path.join(self.recipe.direction_work(DEMO_FOLD, DEMO_DIRECTION), "tapt_mean"),
            "FLEA, mean pooling": os.path.join(grid, "mean"),
            "FLEA, attention pooling": os.path.join(grid, "attention"),
        }

    @property
    def spans_path(self) -> str:
        from fairseq_flea.corpus.demo_corpus import SPANS_FILE

        return os.path.join(self.corpus, SPANS_FILE)

    def evaluate_frame_level(self) -> None:
        """Each phase's model on the test speaker against the known spans: ``eval_test_spans/``
        beside the recipe's ``eval_test/`` (results.json with EDER, attention in span; segments.json)."""
        from fairseq_flea.evaluation.evaluate import evaluate_split

        data = self.recipe.direction_data(DEMO_FOLD, DEMO_DIRECTION)
        for phase, model_dir in self.model_dirs().items():
            out_dir = os.path.join(model_dir, FRAME_LEVEL_DIR)
            run_step(5, f"frame-level evaluation of {phase}", out_dir, partial(
                evaluate_split, os.path.join(model_dir, "checkpoint_best.pt"), data, "test", out_dir,
                spans_path=self.spans_path, spans_of_other_utterances=True))

    def phase_table(self) -> str:
        lines = ["| phase | UA (%) | WA (%) | test utterances | EDER (%) | attention in span (uniform) |",
                 "|---|---|---|---|---|---|"]
        for phase, model_dir in self.model_dirs().items():
            with open(os.path.join(model_dir, "eval_test", "results.json")) as results_file:
                results = json.load(results_file)
            with open(os.path.join(model_dir, FRAME_LEVEL_DIR, "results.json")) as results_file:
                frames = json.load(results_file)
            in_span = ("–" if frames["attention_in_span"] is None else
                       f"{frames['attention_in_span']:.2f} ({frames['uniform_in_span']:.2f}, "
                       f"{frames['partial_span_utterances']} partial)")
            lines.append(f"| {phase} | {100 * results['ua']:.1f} | {100 * results['wa']:.1f} | {results['n']} "
                         f"| {100 * frames['eder']:.1f} | {in_span} |")
        table = "\n".join(lines) + "\n"
        with open(os.path.join(self.work, "demo_results.md"), "w") as table_file:
            table_file.write(table)
        return table

    def plot_partial_utterances(self, count: int = 2) -> List[str]:
        """Attention over time for the test speaker's partial utterances (emotion in one span
        only), the known span shaded, with the predicted segments and the utterance's EDER."""
        from fairseq_flea.inference.recognizer import EmotionRecognizer
        from fairseq_flea.inference.report import plot_recording, recording_segments
        from fairseq_flea.inference.segments import SegmentOptions, neutral_class
        from fairseq_flea.io.spans import read_spans

        with open(os.path.join(self.corpus, "metadata.csv")) as metadata_file:
            rows = [row for row in csv.DictReader(metadata_file)
                    if row["split"] == "test" and float(row["emotion_end"]) - float(row["emotion_start"]) < float(row["duration"]) - 0.01]
        spans = read_spans(self.spans_path)
        attention_dir = self.model_dirs()["FLEA, attention pooling"]
        with open(os.path.join(attention_dir, FRAME_LEVEL_DIR, "segments.json")) as segments_file:
            scored = json.load(segments_file)
        recognizer = EmotionRecognizer.load(os.path.join(attention_dir, "checkpoint_best.pt"))
        written = []
        for row in rows[:count]:
            utterance = os.path.splitext(os.path.basename(row["path"]))[0]
            prediction = recognizer.predict_recording(os.path.join(self.corpus, row["path"]))
            segments = recording_segments(recognizer, prediction, SegmentOptions(), neutral_class(recognizer.class_names))
            score = scored[utterance]
            path = os.path.join(self.work, f"attention_{utterance}.png")
            plot_recording(
                recognizer, prediction, path, segments, spans[utterance],
                title=f"{row['path']}: true {row['label']}, emotional span (shaded) "
                f"{float(row['emotion_start']):.2f}-{float(row['emotion_end']):.2f} s of {float(row['duration']):.2f} s\n"
                f"EDER {100 * score['eder']:.1f} %, attention in span {score['attention_in_span']:.2f} "
                f"(uniform {score['uniform_in_span']:.2f})",
            )
            written.append(path)
        return written
