#!/usr/bin/env bash
# Runs each native fuzzer for FUZZTIME: .ci/fuzz.sh FUZZTIME PKG:NAME...
#
# Go up to 1.26 has a race in its fuzzing coordinator (golang/go#75804,
# fixed in Go 1.27): when a duration -fuzztime runs out, a worker's
# shutdown can be reported as "context deadline exceeded" and fail the
# run, with no failing input. A loaded machine makes it likely. A real
# failure always writes its input to PKG/testdata/fuzz/NAME, so a failed
# run counts only if it wrote one, or if it failed with anything other
# than that message; the spurious case is reported and ignored.
set -uo pipefail
GO=${GO:-go}
fuzztime=$1
shift
failed=0
for f in "$@"; do
  pkg=${f%%:*} name=${f##*:}
  dir=$pkg/testdata/fuzz/$name
  before=$(ls "$dir" 2>/dev/null | sort)
  echo "fuzz $name ($pkg) for $fuzztime"
  out=$($GO test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -parallel 1 "$pkg" 2>&1)
  rc=$?
  grep -v '^fuzz: elapsed' <<<"$out"
  [ $rc -eq 0 ] && continue
  after=$(ls "$dir" 2>/dev/null | sort)
  new=$(comm -13 <(echo "$before") <(echo "$after"))
  reasons=$(grep -A1 -- "^--- FAIL: $name" <<<"$out" | tail -n +2 | sed 's/^[[:space:]]*//')
  if [ -z "$new" ] && [ "$reasons" = "context deadline exceeded" ]; then
    echo "fuzz $name: ignoring the coordinator's spurious 'context deadline exceeded' at the end of -fuzztime (golang/go#75804): no failing input was written"
    continue
  fi
  echo "fuzz $name FAILED${new:+; failing input: $dir/$new}"
  failed=1
done
exit $failed
