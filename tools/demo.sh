#!/usr/bin/env bash
# The README's first command: bring a Vulkan driver when the machine has none
# (tools/vulkan-driver.sh), then run `tweedie demo` on the embedded default
# prior. Extra arguments go to `tweedie demo` (e.g. `--count 8`).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/vulkan-driver.sh
exec cargo run --release -- demo "$@"
