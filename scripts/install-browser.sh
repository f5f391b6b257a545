#!/bin/sh
# Headless Chromium and its driver for the web UI's browser tests (tests/service/test_ui.py),
# from Debian's packages; nothing downloads a browser of its own. Does nothing when both are
# already installed.
set -eu
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
