# lib.sh: helpers for CLI tests. Source it; call ok/fail/expect_*; end with `summary`.
# $S2D is the s2d binary; $S2D_ROOT the repository; each test gets a fresh $WORK directory.
set -u
PASS=0 FAIL=0
WORK=$(mktemp -d "${S2D_TMP:-/tmp}/s2d-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ok() { PASS=$((PASS + 1)); }
fail() { FAIL=$((FAIL + 1)); echo "FAIL: $*" >&2; }
check() { # description, command...: passes when the command succeeds
  local what=$1; shift
  if "$@"; then ok; else fail "$what"; fi
}
# expect_error DESCRIPTION PATTERN COMMAND...: the command must exit non-zero and print PATTERN on stderr.
expect_error() {
  local what=$1 pattern=$2; shift 2
  local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
  if [ $rc -eq 0 ]; then fail "$what: exit 0, expected an error"; return; fi
  if ! grep -qE -- "$pattern" <<<"$err"; then fail "$what: error did not match /$pattern/: $err"; return; fi
  ok
}
summary() { echo "RESULT $(basename "$0") $PASS $FAIL"; [ $FAIL -eq 0 ]; }
