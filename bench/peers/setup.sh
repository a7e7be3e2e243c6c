#!/usr/bin/env bash
# Installs what bench/bench_peers.sh needs, only what is missing, and builds its helpers:
#   - GNU time (/usr/bin/time -v: peak resident memory of each run), gcc, PyTorch/torchvision
#     from Debian's archive, Node.js + npm from Debian's archive if no `node`/`npm` is on PATH;
#   - onnxruntime-node (pinned in bench/peers/package.json) into bench/peers/node_modules with
#     `npm install --ignore-scripts`: the package's install script only fetches optional CUDA
#     libraries, the CPU binary (bin/napi-v6/linux/x64) ships in the npm tarball itself;
#   - build/peers/fma_peak from bench/peers/fma_peak.c.
#   bash bench/peers/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

pkgs=()
need() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || pkgs+=("$1"); }
[[ -x /usr/bin/time ]] || pkgs+=(time)
for p in gcc make libc6-dev libcjson-dev zlib1g-dev python3 python3-numpy python3-torch python3-torchvision; do
  need "$p"
done
# a Node.js from elsewhere (e.g. nodesource, which bundles npm) is fine: only add Debian's if absent
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)
if ((${#pkgs[@]})); then
  echo "peers setup: installing ${pkgs[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
fi

want=$(node -p "require('./bench/peers/package.json').dependencies['onnxruntime-node']")
have=$(node -p "try { require('./bench/peers/node_modules/onnxruntime-node/package.json').version } catch (e) { '' }")
if [[ "$have" != "$want" ]]; then
  echo "peers setup: npm install onnxruntime-node@$want (--ignore-scripts) into bench/peers/node_modules" >&2
  (cd bench/peers && npm install --ignore-scripts --no-audit --no-fund >&2)
fi
node -e "require('./bench/peers/node_modules/onnxruntime-node')" ||
  { echo "peers setup: onnxruntime-node does not load (node $(node --version))" >&2; exit 1; }

mkdir -p build/peers
if [[ ! -x build/peers/fma_peak || bench/peers/fma_peak.c -nt build/peers/fma_peak ||
      bench/peers/setup.sh -nt build/peers/fma_peak ]]; then
  gcc -O2 -mavx2 -mfma -pthread -Wall -Wextra bench/peers/fma_peak.c -o build/peers/fma_peak
fi
