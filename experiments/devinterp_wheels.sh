#!/usr/bin/env bash
# Download into .whl/ the wheels devinterp (PyPI, for `experiments/llc_backend_bench.py --modes ...
# devinterp`) needs on a GPU machine that cannot reach a package registry: CPython 3.12, x86-64,
# with torch, numpy, transformers and tqdm already installed. Prints their total size: they travel
# with the working tree, which may hold 64 MiB in all.
#
#     bash experiments/devinterp_wheels.sh
#
# --no-deps fetches no dependency, so every missing one is named below, pinned to the versions
# tested together on the CPU (tests/test_llc_devinterp.py). devinterp 2.0.1 requires datasets,
# numpy, pandas, pydantic, torch, tqdm, transformers, xarray and zarr; of these and their own
# requirements, the GPU image lacks:
#   datasets (+ dill, multiprocess), pydantic (+ pydantic-core, annotated-types,
#   typing-inspection), zarr (+ numcodecs, donfig, google-crc32c);
# typing-extensions is there but shipped anyway: pydantic-core needs >= 4.14.1.
# Taken from the image (listed there, versions not checked here): pandas, pyarrow (datasets
# 5.2 wants >= 24), xarray, xxhash, fsspec (datasets wants <= 2026.9.0), huggingface-hub
# (>= 1.31), pyyaml, filelock, packaging, requests, httpx, aiohttp. `pip show` them there first.
#
# On the GPU machine (carry .whl):
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#         --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    devinterp==2.0.1
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
    pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
    typing-extensions==4.16.0
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
MORE_PLATFORMS=(manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64)

# the wheels must never be committed
git check-ignore -q .whl/ || { echo ".whl/ is not ignored by git: add /.whl/ to .gitignore" >&2; exit 1; }
mkdir -p .whl

download() {  # package, platforms...
    local package=$1; shift
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${@/#/--platform=}" -d .whl "$package"
}
for package in "${PACKAGES[@]}"; do
    # pip matches manylinux_2_N exactly: try the usual tags, then newer ones
    download "$package" "${PLATFORMS[@]}" 2>/dev/null || download "$package" "${PLATFORMS[@]}" "${MORE_PLATFORMS[@]}"
done

ls -l .whl/*.whl
bytes=$(cat .whl/*.whl | wc -c)
echo "$(ls .whl/*.whl | wc -l) wheels, $bytes bytes ($(( (bytes + 1048575) / 1048576 )) MiB, rounded up) in .whl/"
