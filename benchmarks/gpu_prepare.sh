#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before a GPU check: puts what the device machine lacks into the working tree,
# in folders git ignores, so they travel with `device run --carry .whl .data`:
#   .whl/   cp312 wheels of nas-meta's dependencies the machine's image lacks (it has torch, numpy, pandas, scipy,
#           pillow, pyyaml, safetensors, tqdm), and learn2learn 0.2.0 built for cp312 when python3.12 is here;
#   .data/  the two Omniglot zips (the machine cannot reach ../shared).
#   usage: bash benchmarks/gpu_prepare.sh [DATA]     (default DATA: ../shared/data/omniglot)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/omniglot}
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qxF '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
mkdir -p .whl .data/omniglot
cp "$DATA"/images_background.zip "$DATA"/images_evaluation.zip .data/omniglot/
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
tested=$( [ -x .venv/bin/pip ] && .venv/bin/pip freeze 2>/dev/null || true )  # the versions the tests ran with
for pkg in optuna alembic sqlalchemy colorlog Mako cmaes plotly narwhals greenlet typing-extensions; do
  spec=$(grep -i -m1 "^${pkg//-/[-_]}==" <<< "$tested" || echo "$pkg")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$spec" || python3 -m pip download -q --no-deps -d .whl "$spec"
done
python3 -m pip wheel -q --no-deps -w .whl .   # nas-meta itself
PY312=""
for candidate in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
  if "$candidate" --version >/dev/null 2>&1; then PY312=$candidate; break; fi  # a pyenv shim may exist yet not run
done
if [ -n "$PY312" ]; then  # learn2learn for the peer cells: its sdist's C files predate Cython 3, so regenerate them
  work=$(mktemp -d)
  "$PY312" -m venv "$work/venv"
  "$work/venv/bin/pip" -q install "cython<3.1" setuptools wheel numpy  # building needs no torch
  "$work/venv/bin/pip" -q download --no-deps --no-binary :all: learn2learn==0.2.0 -d "$work"
  tar xzf "$work"/learn2learn-0.2.0.tar.gz -C "$work"
  (cd "$work/learn2learn-0.2.0" && rm -f learn2learn/data/*.c && "$work/venv/bin/cython" -3 learn2learn/data/*.pyx > /dev/null \
     && "$work/venv/bin/python" setup.py -q bdist_wheel -d "$OLDPWD/.whl" > /dev/null 2>&1)
  # `import learn2learn` imports gym (the machine has torchvision, requests, scipy, tqdm, pandas already)
  "$work/venv/bin/pip" -q wheel --no-deps -w .whl gym==0.26.2 gym-notices==0.1.0
  rm -rf "$work"
else
  echo "no python3.12 here: the peer (learn2learn) cells will be skipped on the GPU" >&2
fi
du -sh .whl .data
ls .whl
