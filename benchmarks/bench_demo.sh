#!/usr/bin/env bash
# Time `make demo` on a fresh copy of the project; prints the seconds and the ratio to the
# 600 s budget. The copy lives in a temporary folder, removed afterwards (--keep keeps it).
# On a machine shared with other work the wall time says more about the others than about the
# demo, so it also prints the load average and the CPU seconds the demo's processes used (user +
# sys): on two idle cores a CPU-bound run's wall time lies between half of them and all of them.
#
#   benchmarks/bench_demo.sh               copy of the working tree as git sees it (tracked and
#                                          untracked files, nothing ignored: no .venv, demo/, .cache/),
#                                          with this checkout's .venv linked in (setup not timed)
#   benchmarks/bench_demo.sh --clone       a `git clone` of HEAD instead of the working tree
#   benchmarks/bench_demo.sh --fresh-venv  no .venv: `make demo` builds it too (pip, several GB)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUDGET=${BUDGET:-600}
MODE=tree VENV=reuse KEEP=0
for arg in "$@"; do
    case $arg in
        --clone) MODE=clone ;;
        --fresh-venv) VENV=fresh ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "error: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench_demo.XXXXXX")
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT
COPY=$WORK/project

if [ "$MODE" = clone ]; then
    git clone --quiet "$ROOT" "$COPY"
else
    mkdir -p "$COPY"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$COPY"
fi

MAKE_ARGS=(demo)
if [ "$VENV" = reuse ]; then
    [ -x "$ROOT/.venv/bin/python" ] || { echo "error: no $ROOT/.venv to reuse; run make setup or pass --fresh-venv" >&2; exit 2; }
    ln -s "$ROOT/.venv" "$COPY/.venv"
    MAKE_ARGS=(-o .venv/.installed demo)   # the linked environment counts as set up
fi

echo "make ${MAKE_ARGS[*]} in $COPY ($MODE copy, $VENV venv, $(nproc) CPU cores)"
LOAD_START=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
START=$(date +%s.%N)
set +e
(cd "$COPY" && make "${MAKE_ARGS[@]}") > "$WORK/demo.log" 2>&1
STATUS=$?
set -e
END=$(date +%s.%N)
LOAD_END=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
# `times`, second line: user and sys time of every finished child, make's children included
times > "$WORK/times.txt"   # in this shell: a $(...) subshell would count only its own children
CPU=$(awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, t, /m|s/); n += t[1] * 60 + t[2] }
                     printf "%.1f", n }' "$WORK/times.txt")
tail -n 3 "$WORK/demo.log"
SECONDS_TAKEN=$(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.1f", b - a }')
RATIO=$(awk -v s="$SECONDS_TAKEN" -v b="$BUDGET" 'BEGIN { printf "%.2f", s / b }')
CPU_RATIO=$(awk -v s="$CPU" -v b="$BUDGET" 'BEGIN { printf "%.2f", s / b }')
echo "load average (1 min): ${LOAD_START} at the start, ${LOAD_END} at the end, on $(nproc) cores"
echo "CPU time of the demo's processes: ${CPU} s (user + sys), ${CPU_RATIO} of the ${BUDGET} s budget"
echo "make demo: ${SECONDS_TAKEN} s, ${RATIO} of the ${BUDGET} s budget (exit status $STATUS)"
[ "$STATUS" = 0 ] || { echo "log: $WORK/demo.log" >&2; KEEP=1; trap - EXIT; }
exit "$STATUS"
