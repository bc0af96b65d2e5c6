"""pip-installable Python part of vila_ros (no ROS interfaces: those are built by CMake / colcon).

`pip install .` gives the model, engines, simulator, training and the `vila-ros` command on any Python 3.10-3.12;
the ROS nodes additionally need a ROS 2 install (or the ROS wheels of requirements.txt) and the CMake build.
"""
from setuptools import find_packages, setup

setup(
    name="vila_ros",
    version="0.1.0",
    description="VILA vision-language perception for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["vila_ros", "vila_ros.*"]),
    include_package_data=True,
    package_data={"vila_ros": ["default_model/**/*", "kernels/*.cpp"]},
    # torch is deliberately not listed: install the build for your platform first (CPU, CUDA or JetPack).
    install_requires=[
        "numpy>=1.23",
        "transformers>=5.0,<5.30",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "sentencepiece>=0.2",  # SentencePiece-only tokenizers of public VILA checkpoints
        "opencv-python-headless>=4.8",
        "pillow>=10",  # the SigLIP processor's bicubic resize, reproduced exactly
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "rosbags>=0.10",
        "ninja>=1.11",  # builds the optional CPU kernels on first use
        "outlines-core>=0.2.14,<0.3",  # JSON-schema constrained answers
        "jsonschema>=4.20",
    ],
    extras_require={
        # Cross-checks our AWQ and TensorRT-LLM export against NVIDIA's own (CPU is enough).
        "test": ["pytest", "hypothesis", "nvidia-modelopt==0.47.*", "requests"],
        # `vila-ros serve` and the remote engine (engine: openai).
        "serve": ["fastapi>=0.110", "uvicorn>=0.30", "openai>=1.40", "httpx>=0.27"],
    },
    # The same programs as CMake installs (vila_ros/entry_points.py); the nodes need the ROS interfaces too.
    entry_points={"console_scripts": ["vila-ros = vila_ros.cli:main",
                                      "perception_node = vila_ros.ros.perception_node:main",
                                      "replay_node = vila_ros.tools.replay:main"]},
)
