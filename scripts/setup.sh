#!/usr/bin/env bash
# Installs what convnet needs from Debian's archive (only what is missing), then builds it.
#   scripts/setup.sh           build deps + the Fashion-MNIST dataset
#   scripts/setup.sh --tests   also PyTorch/torchvision (the reference the tests compare against)
set -euo pipefail
cd "$(dirname "$0")/.."

# libomp5: LLVM's OpenMP runtime, which the Makefile links where it is installed (see there)
pkgs=(gcc make libc6-dev libomp5 libcjson-dev zlib1g-dev libjpeg62-turbo-dev libpng-dev
      dataset-fashion-mnist)
if [[ "${1:-}" == "--tests" ]]; then
  pkgs+=(python3 python3-numpy python3-torch python3-torchvision python3-pil)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

make -j"$(nproc)" >&2
