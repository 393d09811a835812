"""The FLEA recipe: every phase, every fold, the ablation grid of the paper's Table 1.

Stages (``--stage``/``--stop-stage``):
  0  manifests: five leave-one-session-out folds (or a CSV corpus's folds)
  1  TAPT: labels from the released HuBERT + k-means (1a), continued pretraining (1b),
     mean-pooling fine-tuning (1c, also the TAPT row of Table 1)
  2  pseudo-emotion labels: layer L of the 1c model, k-means with K clusters
  3  CPT: masked prediction on those labels, from the TAPT checkpoint
  4  FLEA fine-tuning with each pooling
  5  evaluation on each fold's test speaker, and the Table-1 file

Every step writes ``.done`` into its output directory when it finishes and is skipped when
that file exists; an interrupted training step resumes from fairseq's checkpoint_last.pt,
an interrupted feature or label step starts again (its outputs only appear when whole).
The leakage guard checks what each pretraining, k-means and fine-tuning step trains on
against the fold's valid and test splits before the step starts.
"""

import ctypes
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

from fairseq_flea.io.atomic_files import write_text_atomically
from fairseq_flea.io.errors import FleaInputError, FleaStepError, log_tool_progress
from fairseq_flea.corpus.leakage import check_no_leakage, fold_held_out_manifests
from fairseq_flea.evaluation.results_table import write_results_table

logger = logging.getLogger(__name__)

DONE_MARKER = ".done"
PRETRAIN_SPLITS = ("train", "valid")
DEFAULT_CONFIG_ROOT = Path(__file__).resolve().parents[2] / "config"
PRECISION_OVERRIDES = {"fp16": ["common.fp16=true", "common.bf16=false"],
                       "bf16": ["common.fp16=false", "common.bf16=true"],
                       "fp32": ["common.fp16=false", "common.bf16=false"]}


@dataclass
class RecipeConfig:
    work_dir: str
    hubert_checkpoint: str  # released HuBERT (or a stand-in): TAPT starts here
    hubert_kmeans: str  # its k-means model: TAPT labels
    corpus_root: Optional[str] = None  # IEMOCAP
    corpus_csv: Optional[str] = None  # any corpus: path,label,speaker[,group]
    folds: Optional[List[int]] = None  # None: every fold stage 0 wrote
    layers: List[int] = field(default_factory=lambda: [6, 9, 11])
    clusters: List[int] = field(default_factory=lambda: [50, 100, 150])
    poolings: List[str] = field(default_factory=lambda: ["mean", "attention"])
    tapt_label_layer: int = 9
    kmeans_backend: str = "faiss"
    tapt_config: str = "tapt_base"
    cpt_config: str = "flea_cpt_base"
    finetune_configs: dict = field(default_factory=lambda: {"mean": "ser_mean_base", "attention": "ser_attention_base"})
    config_root: str = str(DEFAULT_CONFIG_ROOT)
    overrides: List[str] = field(default_factory=list)  # given to every fairseq-hydra-train
    pretrain_overrides: List[str] = field(default_factory=list)  # TAPT and CPT only
    finetune_overrides: List[str] = field(default_factory=list)  # fine-tuning only
    # Both ways of testing each fold (see fairseq_flea.corpus.folds.DIRECTIONS); everything
    # downstream of a checkpoint chosen on a validation speaker runs per direction.
    directions: List[str] = field(default_factory=lambda: ["FM", "MF"])
    seeds: Optional[List[int]] = None  # fine-tuning repeated with each seed; None: the config's
    stage: int = 0
    stop_stage: int = 5
    jobs: int = 1  # folds run side by side (one per GPU, or per core pair)

    def __post_init__(self):
        if (self.corpus_root is None) == (self.corpus_csv is None):
            raise FleaInputError("give exactly one corpus: an IEMOCAP root or a CSV")


def is_done(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, DONE_MARKER))


def mark_done(directory: str) -> None:
    write_text_atomically(os.path.join(directory, DONE_MARKER), time.strftime("%Y-%m-%d %H:%M:%S\n"))


T = TypeVar("T")
# What steps that run in a process of their own import: the server forks each of them
# with these modules loaded, so a step starts in milliseconds, not seconds.
STEP_PROCESS_MODULES = ["fairseq_flea.units.layer_features", "fairseq_flea.units.kmeans", "fairseq_flea.evaluation.evaluate"]


def run_in_own_process(action: Callable[[], T], description: str) -> T:
    """Run ``action`` (picklable) in a child process and return its result.

    Feature dumps, k-means and evaluation load models; in the recipe's own process their
    GPU memory would stay with PyTorch's caching allocator through every later training
    step. A child gives everything back to the system when it ends.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(STEP_PROCESS_MODULES)
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=log_tool_progress) as pool:
        try:
            return pool.submit(action).result()
        except BrokenProcessPool:
            raise FleaStepError(f"{description}: its process ended abruptly (killed, or out of memory)") from None


def run_step(
    stage: int,
    description: str,
    directory: str,
    action: Callable[[], object],
    in_own_process: bool = False,
    needs: Sequence[Tuple[str, str]] = (),
) -> bool:
    """Run ``action`` unless ``directory`` is done; returns whether it ran. ``needs``: (path,
    the stage that makes it) of its inputs, checked first. Steps that load a model
    (``in_own_process``) run in a child process (``run_in_own_process``)."""
    if is_done(directory):
        logger.info(f"stage {stage} {description}: done already, skipped")
        return False
    for path, made_by in needs:
        if not os.path.exists(path):
            raise FleaInputError(f"stage {stage} {description}: {path} is missing; {made_by} makes it, run that first")
    logger.info(f"stage {stage} {description}: running -> {directory}")
    start = time.time()
    os.makedirs(directory, exist_ok=True)
    if in_own_process:
        run_in_own_process(action, f"stage {stage} {description}")
    else:
        action()
    mark_done(directory)
    logger.info(f"stage {stage} {description}: finished in {time.time() - start:.0f} s")
    return True


PLUGIN_DIR = Path(__file__).resolve().parents[1]


LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """In a child, before it runs: ask Linux to end it when its parent dies, even by kill -9,
    so that a killed recipe leaves no training running (a no-op elsewhere). Runs between
    fork and exec, so it imports nothing."""
    if LIBC is not None:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def hydra_train(config_dir: str, config_name: str, overrides: Sequence[str], log_path: str) -> None:
    """fairseq-hydra-train of this environment, with the installed plugin from any working
    directory; its output goes to ``log_path``; it ends if the calling process dies."""
    command = [str(Path(sys.executable).parent / "fairseq-hydra-train"),
               "--config-dir", config_dir, "--config-name", config_name,
               f"common.user_dir={PLUGIN_DIR}", *overrides]
    with open(log_path, "a") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=end_with_parent)
    if finished.returncode != 0:
        with open(log_path) as log:
            last_lines = log.read().strip().splitlines()[-3:]
        raise FleaStepError(f"fairseq-hydra-train {config_name} failed (see {log_path}): {' | '.join(last_lines)}")


class FleaRecipe:
    def __init__(self, cfg: RecipeConfig):
        self.cfg = cfg
        self.work = os.path.abspath(cfg.work_dir)
        self.data = os.path.join(self.work, "data")

    # Paths -----------------------------------------------------------------
    def fold_data(self, fold: int) -> str:
        return os.path.join(self.data, f"fold{fold}")

    def direction_data(self, fold: int, direction: str) -> str:
        return os.path.join(self.fold_data(fold), direction)

    def fold_work(self, fold: int) -> str:
        """TAPT labels and TAPT pretraining: no validation speaker, once per fold."""
        return os.path.join(self.work, f"fold{fold}")

    def direction_work(self, fold: int, direction: str) -> str:
        """Everything downstream of a checkpoint chosen on this direction's validation speaker."""
        return os.path.join(self.fold_work(fold), direction)

    def grid_dir(self, fold: int, direction: str, layer: int, clusters: int) -> str:
        return os.path.join(self.direction_work(fold, direction), f"L{layer}_K{clusters}")

    def seed_runs(self, parent: str, name: str) -> List[Tuple[Optional[int], str]]:
        """(seed, directory) of each fine-tuning run of one model; no seed: the config's."""
        if not self.cfg.seeds:
            return [(None, os.path.join(parent, name))]
        return [(seed, os.path.join(parent, f"{name}_seed{seed}")) for seed in self.cfg.seeds]

    def tapt_classifier(self, fold: int, direction: str) -> str:
        """The phase-1c model whose layers are clustered: the first seed's."""
        return os.path.join(self.seed_runs(self.direction_work(fold, direction), "tapt_mean")[0][1], "checkpoint_best.pt")

    def finetuned_models(self, fold: int, direction: str) -> List[str]:
        """Directories of every fine-tuned model of a fold and direction: TAPT and the grid."""
        models = [run for _, run in self.seed_runs(self.direction_work(fold, direction), "tapt_mean")]
        for layer, clusters in self.grid():
            for pooling in self.cfg.poolings:
                models += [run for _, run in self.seed_runs(self.grid_dir(fold, direction, layer, clusters), pooling)]
        return models

    def folds(self) -> List[int]:
        if not os.path.isdir(self.data):
            raise FleaInputError(f"{self.data}: no fold manifests yet; stage 0 writes them (--stage 0)")
        if self.cfg.folds:
            return self.cfg.folds
        found = sorted(int(name[4:]) for name in os.listdir(self.data) if name.startswith("fold") and name[4:].isdigit())
        if not found:
            raise FleaInputError(f"{self.data}: no fold directories; run stage 0 first")
        return found

    # Stages ------------------------------------------------------------------
    def run(self) -> None:
        """Stage 0, then stages 1-5 for each fold (``jobs`` folds at a time), then the table."""
        if self.cfg.stage <= 0 <= self.cfg.stop_stage:
            self.stage0_manifests()
        fold_stages = [self.stage1_tapt, self.stage2_pseudo_labels, self.stage3_cpt,
                       self.stage4_flea_finetune, self.stage5_evaluate]
        selected = [stage for number, stage in enumerate(fold_stages, start=1)
                    if self.cfg.stage <= number <= self.cfg.stop_stage]

        def run_fold(fold: int) -> None:
            for stage in selected:
                stage(fold)

        folds = self.folds() if selected else []
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.jobs)) as pool:
            for finished in [pool.submit(run_fold, fold) for fold in folds]:
                finished.result()  # re-raises the first failure
        if self.cfg.stage <= 5 <= self.cfg.stop_stage:
            logger.info("\n" + write_results_table(self.work))

    def stage0_manifests(self) -> None:
        def prepare() -> None:
            if self.cfg.corpus_root is not None:
                from fairseq_flea.corpus.iemocap import prepare_iemocap

                prepare_iemocap(self.cfg.corpus_root, self.data, pretrain_valid_fraction=0.05)
            else:
                from fairseq_flea.corpus.csv_corpus import prepare_corpus

                prepare_corpus(self.cfg.corpus_csv, self.data, pretrain_valid_fraction=0.05)

        run_step(0, "manifests", self.data, prepare)

    def guard(self, fold: int, training_manifests: Sequence[str]) -> None:
        check_no_leakage(training_manifests, fold_held_out_manifests(self.fold_data(fold)))

    def pretrain_manifests(self, fold: int) -> List[str]:
        return [os.path.join(self.fold_data(fold), "pretrain", f"{split}.tsv") for split in PRETRAIN_SPLITS]

    def frame_labels(
        self,
        fold: int,
        label_dir: str,
        dump_split_features: Callable[[str, str, str], None],
        kmeans_path: Optional[str] = None,
        clusters: Optional[int] = None,
        kmeans_backend: Optional[str] = None,
        kmeans_options: Optional[dict] = None,
    ) -> None:
        """Features of the fold's pretraining splits (``dump_split_features(pretrain_dir,
        split, feature_dir)``), k-means learnt on its training split only (unless
        ``kmeans_path`` is given; backend: the recipe's unless named), labels for both splits, merged."""
        from fairseq_flea.units.kmeans import (check_cluster_count, dump_km_labels, learn_kmeans, load_features,
                                               merge_km_labels, save_kmeans)

        self.guard(fold, self.pretrain_manifests(fold))
        pretrain_dir = os.path.join(self.fold_data(fold), "pretrain")
        feature_dir = os.path.join(label_dir, "features")
        for split in PRETRAIN_SPLITS:
            dump_split_features(pretrain_dir, split, feature_dir)
        if kmeans_path is None:
            kmeans_path = os.path.join(label_dir, f"kmeans_{clusters}.bin")
            features = load_features(feature_dir, "train", 1)
            check_cluster_count(features, clusters, feature_dir)
            backend = kmeans_backend or self.cfg.kmeans_backend
            save_kmeans(learn_kmeans(features, clusters, backend, **(kmeans_options or {})), kmeans_path)
        for split in PRETRAIN_SPLITS:
            dump_km_labels(feature_dir, split, kmeans_path, 1, 0, label_dir)
            merge_km_labels(label_dir, split, 1, kmeans_path)
        for path in Path(feature_dir).glob("*"):
            path.unlink()  # features are large and no longer needed once labels exist

    def layer_frame_labels(self, fold: int, checkpoint: str, layer: int, label_dir: str,
                           kmeans_path: Optional[str] = None, clusters: Optional[int] = None,
                           selected_on: Optional[str] = None) -> None:
        """Frame labels from transformer layer ``layer`` of ``checkpoint``; a classifier must
        have been selected on the validation split of ``selected_on`` (its direction)."""
        from fairseq_flea.units.layer_features import dump_layer_features

        if selected_on is not None:
            check_selected_on(checkpoint, selected_on)
        self.frame_labels(fold, label_dir, lambda pretrain_dir, split, feature_dir: dump_layer_features(
            pretrain_dir, split, checkpoint, layer, 1, 0, feature_dir), kmeans_path, clusters)

    def pretrain(self, fold: int, config: str, label_dir: str, init_from: str, save_dir: str) -> None:
        self.guard(fold, self.pretrain_manifests(fold))
        hydra_train(os.path.join(self.cfg.config_root, "pretrain"), config, [
            f"task.data={os.path.join(self.fold_data(fold), 'pretrain')}",
            f"task.label_dir={label_dir}", "task.labels=[km]", f"task.init_from={init_from}",
            f"checkpoint.save_dir={save_dir}", *self.cfg.overrides, *self.cfg.pretrain_overrides,
        ], os.path.join(save_dir, "train.log"))

    def finetune(self, fold: int, direction: str, pooling: str, w2v_path: str, save_dir: str,
                 seed: Optional[int] = None) -> None:
        data = self.direction_data(fold, direction)
        self.guard(fold, [os.path.join(data, "train.tsv")])
        hydra_train(os.path.join(self.cfg.config_root, "finetune"), self.cfg.finetune_configs[pooling], [
            f"task.data={data}", f"model.w2v_path={w2v_path}", f"checkpoint.save_dir={save_dir}",
            *([] if seed is None else [f"common.seed={seed}"]), *self.cfg.overrides, *self.cfg.finetune_overrides,
        ], os.path.join(save_dir, "train.log"))

    def grid(self) -> List[tuple]:
        return [(layer, clusters) for layer in self.cfg.layers for clusters in self.cfg.clusters]

    def stage1_tapt(self, fold: int) -> None:
        from fairseq_flea.corpus.folds import write_direction

        work = self.fold_work(fold)
        labels, tapt = os.path.join(work, "tapt_labels"), os.path.join(work, "tapt")
        run_step(1, f"fold {fold} TAPT labels", labels, partial(
            self.layer_frame_labels, fold, self.cfg.hubert_checkpoint, self.cfg.tapt_label_layer, labels,
            self.cfg.hubert_kmeans), in_own_process=True)
        run_step(1, f"fold {fold} TAPT pretraining", tapt, partial(
            self.pretrain, fold, self.cfg.tapt_config, labels, self.cfg.hubert_checkpoint, tapt))
        for direction in self.cfg.directions:
            run_step(1, f"fold {fold} {direction} splits", self.direction_data(fold, direction), partial(
                write_direction, self.fold_data(fold), direction))
            for seed, run in self.seed_runs(self.direction_work(fold, direction), "tapt_mean"):
                run_step(1, f"fold {fold} {direction} TAPT fine-tuning (mean pooling){seed_label(seed)}", run, partial(
                    self.finetune, fold, direction, "mean", os.path.join(tapt, "checkpoint_last.pt"), run, seed))

    def stage2_pseudo_labels(self, fold: int) -> None:
        for direction in self.cfg.directions:
            for layer, clusters in self.grid():
                labels = os.path.join(self.grid_dir(fold, direction, layer, clusters), "labels")
                run_step(2, f"fold {fold} {direction} layer {layer} K={clusters} labels", labels, partial(
                    self.layer_frame_labels, fold, self.tapt_classifier(fold, direction), layer, labels,
                    clusters=clusters, selected_on=self.direction_data(fold, direction)), in_own_process=True,
                    needs=[(self.tapt_classifier(fold, direction), "stage 1 (TAPT fine-tuning)")])

    def stage3_cpt(self, fold: int) -> None:
        tapt = os.path.join(self.fold_work(fold), "tapt", "checkpoint_last.pt")
        for direction in self.cfg.directions:
            for layer, clusters in self.grid():
                grid_dir = self.grid_dir(fold, direction, layer, clusters)
                cpt = os.path.join(grid_dir, "cpt")
                labels = os.path.join(grid_dir, "labels")
                run_step(3, f"fold {fold} {direction} layer {layer} K={clusters} CPT", cpt, partial(
                    self.pretrain, fold, self.cfg.cpt_config, labels, tapt, cpt),
                    needs=[(tapt, "stage 1 (TAPT pretraining)"), (os.path.join(labels, DONE_MARKER), "stage 2")])

    def stage4_flea_finetune(self, fold: int) -> None:
        for direction in self.cfg.directions:
            for layer, clusters in self.grid():
                grid_dir = self.grid_dir(fold, direction, layer, clusters)
                for pooling in self.cfg.poolings:
                    for seed, run in self.seed_runs(grid_dir, pooling):
                        cpt = os.path.join(grid_dir, "cpt", "checkpoint_last.pt")
                        run_step(4, f"fold {fold} {direction} layer {layer} K={clusters} {pooling} fine-tuning"
                                    f"{seed_label(seed)}", run, partial(
                                        self.finetune, fold, direction, pooling, cpt, run, seed),
                                 needs=[(cpt, "stage 3 (CPT)")])

    def stage5_evaluate(self, fold: int) -> None:
        from fairseq_flea.evaluation.evaluate import evaluate_split

        for direction in self.cfg.directions:
            for model_dir in self.finetuned_models(fold, direction):
                out_dir = os.path.join(model_dir, "eval_test")
                checkpoint = os.path.join(model_dir, "checkpoint_best.pt")
                run_step(5, f"fold {fold} evaluation of {os.path.relpath(model_dir, self.work)}", out_dir, partial(
                    evaluate_split, checkpoint, self.direction_data(fold, direction), "test", out_dir),
                    in_own_process=True, needs=[(checkpoint, "stage 1 or 4 (fine-tuning)")])


def seed_label(seed: Optional[int]) -> str:
    return "" if seed is None else f", seed {seed}"


def check_selected_on(checkpoint: str, data_dir: str) -> None:
    """A fine-tuned classifier chose its epoch on its task.data's validation split. Labels,
    CPT and fine-tuning of one direction may build on it only if that is the direction's
    own: the other direction tests on that validation speaker."""
    from fairseq_flea.hubert.checkpoints import load_checkpoint_state

    trained_on = str(load_checkpoint_state(checkpoint)["cfg"]["task"]["data"])
    if os.path.abspath(trained_on) != os.path.abspath(data_dir):
        raise FleaInputError(
            f"{checkpoint}: selected on the validation split of {trained_on}, not of {data_dir}; "
            "its labels would leak that direction's test speaker"
        )
