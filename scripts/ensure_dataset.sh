#!/usr/bin/env bash
# Installs Fashion-MNIST (Debian package dataset-fashion-mnist) when it is missing and apt is usable.
# Never fails the set-up: code that needs the data says clearly how to get it.
set -u
DIR=/usr/share/datasets/fashion-mnist
[ -d "$DIR" ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)..."
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
   || echo "Could not install dataset-fashion-mnist; pass --data-dir to commands that need Fashion-MNIST."
fi
exit 0
