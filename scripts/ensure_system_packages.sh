#!/usr/bin/env bash
# Installs the Debian packages the project uses when they are missing and apt is usable:
#   dataset-fashion-mnist  (Fashion-MNIST, /usr/share/datasets/fashion-mnist) — embedded models, evaluation
#   chromium               (headless rendering check of `minority report`)
# Never fails the set-up: code that needs them says clearly how to get them, and the report test skips.
set -u
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing Debian packages: ${need[*]}"
  (apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || \
   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${need[@]}" >/dev/null 2>&1)) \
   || echo "Could not install ${need[*]}; pass --data-dir for Fashion-MNIST; the HTML report test will skip."
fi
exit 0
