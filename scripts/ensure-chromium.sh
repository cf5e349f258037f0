#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through playwright-core (which never downloads a browser).
# Installs it when missing and this machine can (root with apt-get); otherwise says how.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "deputy: installing Debian's chromium for the browser tests" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "deputy: the browser tests need /usr/bin/chromium: install Debian's 'chromium' package (e.g. sudo apt-get install chromium)" >&2
exit 1
