"""Installs fairseq-flea: the FLEA plugin for fairseq (see README.md)."""

from setuptools import find_packages, setup

setup(
    name="fairseq-flea",
    version="0.1.0",
    description=(
        "Frame-level emotional state alignment (FLEA) for speech emotion "
        "recognition, as a fairseq plugin"
    ),
    python_requires=">=3.11",
    packages=find_packages(include=["fairseq_flea", "fairseq_flea.*"]),
    install_requires=[
        # fairseq 0.12.2 does not import on Python 3.11; this is upstream main + that fix.
        "fairseq-fixed==0.12.3.1",
        # The versions the tests ran on: 2.13.0 (CPU; CI and development), 2.11 (cu130, the GPU
        # checks); fairseq-fixed 0.12.3.1 was also measured to work with 2.14.1.
        "torch>=2.11,<2.15",
        "numpy",
        "scikit-learn",
        "npy-append-array",
        "soundfile",
        "tqdm",
        "safetensors",
        "joblib",
        "scipy",
        # learn_kmeans.py --backend faiss
        "faiss-cpu",
        # tools/predict.py --plot
        "matplotlib",
        # the recipe's --launcher slurm
        "submitit",
    ],
    extras_require={
        # transformers only to build a HuggingFace HuBERT that the converter's test reads;
        # speechbrain for its own EDER (speechbrain/utils/EDER.py), the frame-level tests' reference
        # onnx, onnxruntime (and onnxscript, torch.onnx's dynamo exporter): tools/export_model.py onnx and its tests
        "test": ["pytest", "pytest-xdist", "transformers", "speechbrain", "onnx", "onnxruntime", "onnxscript"],
        # tools/export_model.py huggingface
        "huggingface": ["transformers"],
        # tools/export_model.py onnx (exporting needs torch and transformers; running the .onnx, onnxruntime alone)
        "onnx": ["onnx", "onnxruntime", "onnxscript", "transformers"],
    },
)
