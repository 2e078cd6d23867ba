#!/bin/sh
# Make sure the system tools the test suite uses are present; install what is missing.
#
# Today that is systemd-analyze and systemd-sysusers (Debian package `systemd`), which check the
# shipped unit (tests/test_systemd.py). Idempotent and quiet: it does nothing when the tools are
# there, and uses apt-get only when something is missing. Without apt-get, or without root (or
# passwordless sudo), it says what to install and carries on: those tests then skip.
set -eu

packages=""
if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v systemd-sysusers >/dev/null 2>&1; then
    packages="systemd"
fi
# redis-server: the Redis Streams publishing tests start a real server (issue 7); they fail without it.
if ! command -v redis-server >/dev/null 2>&1; then
    packages="${packages:+$packages }redis-server"
fi
if [ -z "$packages" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: install $packages; the unit-file tests skip and the Redis tests fail without them" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
else
    echo "note: run 'apt-get install $packages' as root; the unit-file tests skip and the Redis tests fail without them" >&2
    exit 0
fi

echo "installing $packages (for the unit-file and Redis tests)" >&2
export DEBIAN_FRONTEND=noninteractive
# Word splitting of $as_root and $packages is intended.
if ! $as_root apt-get install -y -qq --no-install-recommends $packages >/dev/null 2>&1; then
    $as_root apt-get update -qq >/dev/null
    $as_root apt-get install -y -qq --no-install-recommends $packages >/dev/null
fi
