#!/usr/bin/env bash
# System packages some extras and tests need, from Debian's registry (apt), installed only when missing:
#   chromium + chromium-driver  the browser test of `kikimimi serve` (tests/apps/test_serve_browser.py)
#   default-jre-headless        METEOR and the PTB tokenizer of the caption metrics (extra "caption")
# Arguments choose the groups: `browser`, `java` (default: both).
# Never fails the set-up: without root or apt, the tests that need these skip and say why.
set -uo pipefail
groups="${*:-browser java}"
need=()
case " $groups " in *" browser "*)
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver) ;;
esac
case " $groups " in *" java "*)
    command -v java >/dev/null 2>&1 || need+=(default-jre-headless) ;;
esac
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: not installing ${need[*]} (needs root and apt-get); the tests that need them will skip" >&2
    exit 0
fi
echo "installing system packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${need[@]}" >/tmp/kikimimi-apt.log 2>&1; then
    apt-get update -q >>/tmp/kikimimi-apt.log 2>&1
    apt-get install -y -q --no-install-recommends "${need[@]}" >>/tmp/kikimimi-apt.log 2>&1 \
        || echo "note: apt-get install ${need[*]} failed (see /tmp/kikimimi-apt.log); the tests that need them will skip" >&2
fi
exit 0
