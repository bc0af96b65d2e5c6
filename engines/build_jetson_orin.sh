#!/usr/bin/env bash
# Build the VILA engines ON a Jetson AGX Orin (engines are specific to the GPU and the TensorRT version).
#
# Target stack (exact): JetPack 6.1 (L4T R36.4, CUDA 12.6, TensorRT 10.3), TensorRT-LLM v0.12.0-jetson built from
# source as in TensorRT-LLM's README4Jetson.md, MAX-N power mode.
#
#   ./build_jetson_orin.sh EXPORT_DIR
#
# EXPORT_DIR comes from `vila-ros export-trtllm --model INT4_DIR --out EXPORT_DIR` (run anywhere: it is CPU only).
set -euo pipefail
EXPORT_DIR=${1:?usage: $0 EXPORT_DIR}
[ -f "$EXPORT_DIR/build_engines.sh" ] || { echo "no build_engines.sh in $EXPORT_DIR (run vila-ros export-trtllm)"; exit 2; }
command -v trtllm-build >/dev/null || { cat <<'MSG'
trtllm-build not found. Install TensorRT-LLM v0.12.0-jetson (JetPack 6.1):
  sudo apt-get install -y python3-pip libopenblas-dev git-lfs ccache
  git clone https://github.com/NVIDIA/TensorRT-LLM.git && cd TensorRT-LLM && git checkout v0.12.0-jetson && git lfs pull
  python3 scripts/build_wheel.py --clean --cuda_architectures 87 -DENABLE_MULTI_DEVICE=0 --build_type Release --use_ccache
  pip install build/tensorrt_llm-*.whl
(see TensorRT-LLM README4Jetson.md; cuSPARSELt and numpy==1.26.1 are prerequisites there)
MSG
exit 2; }
TRTEXEC=${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}
command -v trtexec >/dev/null || export PATH="$(dirname "$TRTEXEC"):$PATH"
python3 -c "import tensorrt_llm, sys; v = tensorrt_llm.__version__; print('tensorrt_llm', v); sys.exit(0 if v.startswith('0.12') else 1)" \
  || echo "warning: this script was written for TensorRT-LLM 0.12.0-jetson"
sudo nvpmodel -m 0 && sudo jetson_clocks || echo "warning: could not set MAX-N clocks"
bash "$EXPORT_DIR/build_engines.sh"
echo "engines in $EXPORT_DIR/llm_engine and $EXPORT_DIR/vision/visual_encoder.engine"
echo "run: vila-ros describe --engine tensorrt_llm --model $EXPORT_DIR --image IMG --prompt 'Describe the scene.'"
