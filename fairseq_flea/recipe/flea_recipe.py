"""The FLEA recipe: every phase, every fold, the ablation grid of the paper's Table 1.

Stages (``--stage``/``--stop-stage``):
  0  manifests: five leave-one-session-out folds (or a CSV corpus's folds)
  1  TAPT: labels of the whole corpus from the released HuBERT + k-means, once (1a);
     continued pretraining per fold (1b); mean-pooling fine-tuning per direction (1c, also
     the TAPT row of Table 1)
  2  pseudo-emotion labels: layer L of the 1c model dumped once, k-means with each K
  3  CPT: masked prediction on those labels, from the TAPT checkpoint
  4  FLEA fine-tuning with each pooling
  5  evaluation on each fold's test speaker, and the Table-1 file

Stage 0 runs first, in this process; the rest is a graph of steps (``steps.Step``), each
done once: ``steps()`` builds it, a launcher (local or SLURM) runs what is not done. Every
step writes ``.done`` into its output directory when it finishes; an interrupted
pretraining resumes from fairseq's checkpoint_last.pt (saved every 2,000 updates), an
interrupted fine-tuning (minutes; it keeps only checkpoint_best.pt), feature or label step
starts again (its outputs only appear when whole). The leakage guard checks what each
pretraining, k-means and fine-tuning step trains on against the fold's valid and test
splits before the step starts.
"""

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from fairseq_flea.corpus.leakage import check_no_leakage, fold_held_out_manifests
from fairseq_flea.evaluation.results_table import write_results_table
from fairseq_flea.io.atomic_files import atomic_outputs
from fairseq_flea.io.errors import FleaInputError
from fairseq_flea.recipe.processes import hydra_train, run_in_own_process
from fairseq_flea.recipe.steps import (Plan, Step, format_plan, format_stage_costs, is_done, mark_done, plan_steps,
                                        remove_finished_scratch)
from fairseq_flea.units.kmeans import DEFAULT_KMEANS_BACKEND

logger = logging.getLogger(__name__)

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
    kmeans_backend: str = DEFAULT_KMEANS_BACKEND
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
    gpus_per_step: int = 1  # GPUs of each training step (fairseq's own DDP when more than 1)
    spans: Optional[str] = None  # ZED-style reference spans of the corpus: stage 5 adds EDER, attention in span

    def __post_init__(self):
        if (self.corpus_root is None) == (self.corpus_csv is None):
            raise FleaInputError("give exactly one corpus: an IEMOCAP root or a CSV")
        if self.gpus_per_step < 1:
            raise FleaInputError(f"--gpus-per-step must be at least 1, got {self.gpus_per_step}")


def run_step(stage: int, description: str, directory: str, action: Callable[[], object],
             in_own_process: bool = False) -> bool:
    """Run ``action`` here unless ``directory`` is done; returns whether it ran. For the
    work outside the graph (stage 0, the demo's stand-in); ``in_own_process``: in a child."""
    if is_done(directory):
        logger.info(f"stage {stage} {description}: done already, skipped")
        return False
    logger.info(f"stage {stage} {description}: running -> {directory}")
    start = time.time()
    os.makedirs(directory, exist_ok=True)
    if in_own_process:
        run_in_own_process(action, f"stage {stage} {description}")
    else:
        action()
    mark_done(directory, time.time() - start)
    logger.info(f"stage {stage} {description}: finished in {time.time() - start:.0f} s")
    return True


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

    def grid(self) -> List[tuple]:
        return [(layer, clusters) for layer in self.cfg.layers for clusters in self.cfg.clusters]

    # The graph ------------------------------------------------------------------
    def step(self, stage: int, description: str, output_dir: str, action: Callable[[], object],
             kind: str, after: Sequence[str] = (), gpus: int = 0, scratch: bool = False,
             trains: bool = False) -> Step:
        return Step(name=os.path.relpath(output_dir, self.work), stage=stage, description=description,
                    output_dir=output_dir, action=action, after=list(after), gpus=gpus, scratch=scratch,
                    trains=trains, kind=kind)

    def steps(self, folds: Sequence[int]) -> List[Step]:
        """Every step of stages 1-5 for ``folds``, each once, in dependency order.

        GPUs: a training step takes ``gpus_per_step``, a step that runs a model (feature
        dumps, evaluation) one, the rest none."""
        train_gpus = self.cfg.gpus_per_step
        corpus_labels = self.step(1, "TAPT labels of the whole corpus", os.path.join(self.work, "tapt_labels"),
                                  partial(self.corpus_tapt_labels, os.path.join(self.work, "tapt_labels")),
                                  "TAPT labels, corpus", gpus=1)
        steps = [corpus_labels]
        for fold in folds:
            work = self.fold_work(fold)
            fold_labels = self.step(1, f"fold {fold} TAPT labels", os.path.join(work, "tapt_labels"), partial(
                self.fold_tapt_labels, fold, corpus_labels.output_dir, os.path.join(work, "tapt_labels")),
                "TAPT labels, fold", after=[corpus_labels.name])
            tapt = self.step(1, f"fold {fold} TAPT pretraining", os.path.join(work, "tapt"), partial(
                self.pretrain, fold, self.cfg.tapt_config, fold_labels.output_dir, self.cfg.hubert_checkpoint,
                os.path.join(work, "tapt")), "TAPT pretraining", after=[fold_labels.name], gpus=train_gpus,
                trains=True)
            steps += [fold_labels, tapt]
            tapt_checkpoint = os.path.join(tapt.output_dir, "checkpoint_last.pt")
            for direction in self.cfg.directions:
                steps += self.direction_steps(fold, direction, tapt, tapt_checkpoint)
        return steps

    def direction_steps(self, fold: int, direction: str, tapt: Step, tapt_checkpoint: str) -> List[Step]:
        from fairseq_flea.corpus.folds import write_direction

        train_gpus = self.cfg.gpus_per_step
        data = self.direction_data(fold, direction)
        splits = self.step(1, f"fold {fold} {direction} splits", data, partial(
            write_direction, self.fold_data(fold), direction), "direction splits")
        steps, models = [splits], []
        for seed, run in self.seed_runs(self.direction_work(fold, direction), "tapt_mean"):
            models.append(self.step(1, f"fold {fold} {direction} TAPT fine-tuning (mean pooling){seed_label(seed)}", run,
                                    partial(self.finetune, fold, direction, "mean", tapt_checkpoint, run, seed),
                                    "TAPT fine-tuning", after=[tapt.name, splits.name], gpus=train_gpus,
                                    trains=True))
        steps += models
        classifier = models[0]  # the first seed's: its layers are clustered
        for layer in self.cfg.layers:
            features = self.step(2, f"fold {fold} {direction} layer {layer} features",
                                 os.path.join(self.direction_work(fold, direction), f"L{layer}_features"), partial(
                                     self.dump_pretrain_features, fold, self.tapt_classifier(fold, direction), layer,
                                     os.path.join(self.direction_work(fold, direction), f"L{layer}_features"), data),
                                 "layer features", after=[classifier.name], gpus=1, scratch=True)
            steps.append(features)
            for clusters in self.cfg.clusters:
                grid_dir = self.grid_dir(fold, direction, layer, clusters)
                where = f"fold {fold} {direction} layer {layer} K={clusters}"
                labels = self.step(2, f"{where} labels", os.path.join(grid_dir, "labels"), partial(
                    self.cluster_labels, fold, features.output_dir, os.path.join(grid_dir, "labels"), clusters),
                    "k-means labels", after=[features.name])
                cpt = self.step(3, f"{where} CPT", os.path.join(grid_dir, "cpt"), partial(
                    self.pretrain, fold, self.cfg.cpt_config, labels.output_dir, tapt_checkpoint,
                    os.path.join(grid_dir, "cpt")), "CPT", after=[labels.name, tapt.name], gpus=train_gpus,
                    trains=True)
                steps += [labels, cpt]
                cpt_checkpoint = os.path.join(cpt.output_dir, "checkpoint_last.pt")
                for pooling in self.cfg.poolings:
                    for seed, run in self.seed_runs(grid_dir, pooling):
                        model = self.step(4, f"{where} {pooling} fine-tuning{seed_label(seed)}", run, partial(
                            self.finetune, fold, direction, pooling, cpt_checkpoint, run, seed),
                            "FLEA fine-tuning", after=[cpt.name, splits.name], gpus=train_gpus, trains=True)
                        steps.append(model)
                        models.append(model)
        for model in models:
            out_dir = os.path.join(model.output_dir, "eval_test")
            steps.append(self.step(5, f"fold {fold} evaluation of {model.name}", out_dir, partial(
                self.evaluate, os.path.join(model.output_dir, "checkpoint_best.pt"), data, out_dir),
                "evaluation", after=[model.name], gpus=1))
        return steps

    def plan(self) -> Tuple[List[Step], Plan]:
        """The graph of the configured folds, and what of it ``stage..stop_stage`` would run."""
        steps = self.steps(self.folds())
        return steps, plan_steps(steps, max(1, self.cfg.stage), self.cfg.stop_stage)

    def run(self, launcher, dry_run: bool = False) -> None:
        """Stage 0 here, then the planned steps through ``launcher``, then the table."""
        if self.cfg.stage <= 0 <= self.cfg.stop_stage:
            if dry_run and not is_done(self.data):
                logger.info(f"stage 0 manifests: would run -> {self.data}; the folds' steps are listed once it has run")
                return
            self.stage0_manifests()
        if self.cfg.stop_stage < 1:
            return
        steps, plan = self.plan()
        if dry_run:
            logger.info("\n" + format_plan(steps, plan, self.work))
            logger.info("step times measured so far (each step's .done):\n" + format_stage_costs(steps))
            return
        if plan.steps:
            report = launcher.run(steps, plan)
        else:
            logger.info("every selected step is done already, skipped")
            report = None
        for name in remove_finished_scratch(steps):
            logger.info(f"removed {name}: every step that reads it is done")
        if self.cfg.stop_stage >= 5 and any(is_done(os.path.join(model, "eval_test"))
                                            for fold in self.folds() for direction in self.cfg.directions
                                            for model in self.finetuned_models(fold, direction)):
            logger.info("\n" + write_results_table(self.work))
        if report is not None:
            report.raise_if_failed()

    # Step actions ------------------------------------------------------------------
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

    def corpus_tapt_labels(self, label_dir: str) -> None:
        """Labels of every utterance (stage 0's all.tsv) from the released model and its
        k-means: neither depends on a fold, so the corpus is labelled once."""
        from fairseq_flea.units.kmeans import dump_km_labels, merge_km_labels
        from fairseq_flea.units.layer_features import dump_layer_features

        feature_dir = os.path.join(label_dir, "features")
        dump_layer_features(self.data, "all", self.cfg.hubert_checkpoint, self.cfg.tapt_label_layer, 1, 0, feature_dir)
        dump_km_labels(feature_dir, "all", self.cfg.hubert_kmeans, 1, 0, label_dir)
        merge_km_labels(label_dir, "all", 1, self.cfg.hubert_kmeans)
        shutil.rmtree(feature_dir)  # large, and no longer needed once labels exist

    def fold_tapt_labels(self, fold: int, corpus_label_dir: str, label_dir: str) -> None:
        """The corpus's TAPT labels of the fold's pretraining splits, in their order."""
        from fairseq_flea.io.manifest import select_label_lines

        self.guard(fold, self.pretrain_manifests(fold))
        for split, manifest in zip(PRETRAIN_SPLITS, self.pretrain_manifests(fold)):
            lines = select_label_lines(os.path.join(self.data, "all.tsv"), os.path.join(corpus_label_dir, "all.km"),
                                       manifest)
            with atomic_outputs(os.path.join(label_dir, f"{split}.km")) as (partial_path,):
                Path(partial_path).write_text("".join(line + "\n" for line in lines))
        shutil.copyfile(os.path.join(corpus_label_dir, "dict.km.txt"), os.path.join(label_dir, "dict.km.txt"))

    def dump_pretrain_features(self, fold: int, checkpoint: str, layer: int, feature_dir: str,
                               selected_on: Optional[str] = None) -> None:
        """Layer ``layer`` of ``checkpoint`` over the fold's pretraining splits; a classifier
        must have been selected on the validation split of ``selected_on`` (its direction)."""
        from fairseq_flea.units.layer_features import dump_layer_features

        if selected_on is not None:
            check_selected_on(checkpoint, selected_on)
        self.guard(fold, self.pretrain_manifests(fold))
        for split in PRETRAIN_SPLITS:
            dump_layer_features(os.path.join(self.fold_data(fold), "pretrain"), split, checkpoint, layer, 1, 0,
                                feature_dir)

    def cluster_labels(self, fold: int, feature_dir: str, label_dir: str, clusters: Optional[int] = None,
                       kmeans_path: Optional[str] = None, kmeans_backend: Optional[str] = None,
                       kmeans_options: Optional[dict] = None) -> None:
        """k-means learnt on the fold's training split only (unless ``kmeans_path`` is
        given; backend: the recipe's unless named), labels for both pretraining splits, merged."""
        from fairseq_flea.units.kmeans import dump_km_labels, learn_kmeans_from_shards, merge_km_labels, save_kmeans

        self.guard(fold, self.pretrain_manifests(fold))
        if kmeans_path is None:
            kmeans_path = os.path.join(label_dir, f"kmeans_{clusters}.bin")
            backend = kmeans_backend or self.cfg.kmeans_backend
            save_kmeans(learn_kmeans_from_shards(feature_dir, "train", 1, clusters, backend, **(kmeans_options or {})),
                        kmeans_path)
        for split in PRETRAIN_SPLITS:
            dump_km_labels(feature_dir, split, kmeans_path, 1, 0, label_dir)
            merge_km_labels(label_dir, split, 1, kmeans_path)

    def frame_labels(self, fold: int, label_dir: str, dump_split_features: Callable[[str, str, str], None],
                     clusters: Optional[int] = None, kmeans_backend: Optional[str] = None,
                     kmeans_options: Optional[dict] = None) -> None:
        """Features and labels in one go (the demo's stand-in): ``dump_split_features(pretrain_dir,
        split, feature_dir)`` for each pretraining split, then ``cluster_labels``."""
        self.guard(fold, self.pretrain_manifests(fold))
        feature_dir = os.path.join(label_dir, "features")
        for split in PRETRAIN_SPLITS:
            dump_split_features(os.path.join(self.fold_data(fold), "pretrain"), split, feature_dir)
        self.cluster_labels(fold, feature_dir, label_dir, clusters, kmeans_backend=kmeans_backend,
                            kmeans_options=kmeans_options)
        shutil.rmtree(feature_dir)

    def layer_frame_labels(self, fold: int, checkpoint: str, layer: int, label_dir: str, clusters: int) -> None:
        """Frame labels with ``clusters`` clusters of transformer layer ``layer`` of ``checkpoint``."""
        from fairseq_flea.units.layer_features import dump_layer_features

        self.frame_labels(fold, label_dir, lambda pretrain_dir, split, feature_dir: dump_layer_features(
            pretrain_dir, split, checkpoint, layer, 1, 0, feature_dir), clusters)

    def evaluate(self, checkpoint: str, data: str, out_dir: str) -> None:
        from fairseq_flea.evaluation.evaluate import evaluate_split

        evaluate_split(checkpoint, data, "test", out_dir, spans_path=self.cfg.spans, spans_of_other_utterances=True)

    def training_overrides(self) -> List[str]:
        world = [f"distributed_training.distributed_world_size={self.cfg.gpus_per_step}"] \
            if self.cfg.gpus_per_step > 1 else []
        return [*world, *self.cfg.overrides]

    def pretrain(self, fold: int, config: str, label_dir: str, init_from: str, save_dir: str) -> None:
        self.guard(fold, self.pretrain_manifests(fold))
        hydra_train(os.path.join(self.cfg.config_root, "pretrain"), config, [
            f"task.data={os.path.join(self.fold_data(fold), 'pretrain')}",
            f"task.label_dir={label_dir}", "task.labels=[km]", f"task.init_from={init_from}",
            f"checkpoint.save_dir={save_dir}", *self.training_overrides(), *self.cfg.pretrain_overrides,
        ], os.path.join(save_dir, "train.log"))

    def finetune(self, fold: int, direction: str, pooling: str, w2v_path: str, save_dir: str,
                 seed: Optional[int] = None) -> None:
        data = self.direction_data(fold, direction)
        self.guard(fold, [os.path.join(data, "train.tsv")])
        hydra_train(os.path.join(self.cfg.config_root, "finetune"), self.cfg.finetune_configs[pooling], [
            f"task.data={data}", f"model.w2v_path={w2v_path}", f"checkpoint.save_dir={save_dir}",
            *([] if seed is None else [f"common.seed={seed}"]), *self.training_overrides(), *self.cfg.finetune_overrides,
        ], os.path.join(save_dir, "train.log"))


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
