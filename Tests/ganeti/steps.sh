# Step helpers shared by the tests against a real Ganeti cluster (sourced, not run).
# The sourcing script sets: WORK (a scratch dir), ROOT, G (function: runs a command on the node),
# LOG_DIRS (directories whose new log files explain a failed step), KEEP_GOING (0/1), TEST (its
# name, for messages).
now_us() { local t=${EPOCHREALTIME//[!0-9]/}; echo "$t"; }
fmt_s() { local d=$(($1 / 10000)); printf '%d.%02d' $((d / 100)) $((d % 100)); }
T0=$(now_us)
STEPS=0
OUT=/dev/null                  # output file of the last step

# Prints what helps to see why a step failed: the step's output, the Ganeti jobs that ran
# during the step (the result and last log lines of a failed one), the plugin logs written
# since the step began (LOG_DIRS), and node daemon errors since then.
indent() { sed "s/^/  | /"; }
diagnose() {
    local out=$1 mark=$2 since=$3 jobs id status f
    echo "  ---- output (last 20 lines): $out"
    tail -n 20 "$out" | indent
    jobs=$(G gnt-job list --no-headers -o id,status,summary 2> /dev/null | sort -n | awk -v m="$JOB_MARK" '$1 > m' || true)
    if [ -n "$jobs" ]; then
        echo "  ---- Ganeti jobs of this step"
        indent <<< "$jobs"
        while read -r id status _; do
            [ "$status" = error ] || continue
            echo "  ---- gnt-job info $id: result and last log lines"
            { G gnt-job info "$id" 2>&1 || true; } | sed -n '/^ *Result:/,$p' | awk 'NR <= 12 || /Content:/' |
                tail -n 20 | indent
        done <<< "$jobs"
    fi
    for f in $(find "${LOG_DIRS[@]}" -type f -newer "$mark" 2> /dev/null | sort | tail -n 6); do
        echo "  ---- $f"
        tail -n 8 "$f" | indent
    done
    if [ -f /var/log/ganeti/node-daemon.log ]; then
        f=$(awk -v t="$since" 'substr($0, 1, 19) >= t && / ERROR /' /var/log/ganeti/node-daemon.log | tail -n 5)
        if [ -n "$f" ]; then
            echo "  ---- node-daemon.log errors during the step"
            indent <<< "$f"
        fi
    fi
    return 0
}
JOB_MARK=0
last_job() { G gnt-job list --no-headers -o id 2> /dev/null | sort -n | tail -1 || true; }

# step DESC CMD...: runs CMD (a command or a check function), which must succeed.
# step_fails DESC REGEX CMD...: CMD must fail, and its output must match REGEX (grep -iE).
step() { _step ok "" "$@"; }
step_fails() { local desc=$1 re=$2; shift 2; _step fail "$re" "$desc" "$@"; }
_step() {
    local want=$1 re=$2 desc=$3 s rc=0 good=1 why=""
    shift 3
    STEPS=$((STEPS + 1))
    OUT=$WORK/step-$STEPS.out
    local mark=$WORK/step-$STEPS.mark
    touch "$mark"
    local since
    since=$(date '+%Y-%m-%d %H:%M:%S')
    JOB_MARK=$(last_job)
    JOB_MARK=${JOB_MARK:-0}
    s=$(now_us)
    "$@" > "$OUT" 2>&1 < /dev/null || rc=$?
    if [ "$want" = ok ] && [ $rc != 0 ]; then good=0; why="exit $rc"; fi
    if [ "$want" = fail ]; then
        if [ $rc = 0 ]; then good=0; why="succeeded, but must fail"
        elif ! grep -qiE -- "$re" "$OUT"; then good=0; why="failed (exit $rc) without a message matching /$re/"
        fi
    fi
    printf '[%7ss] %6ss %-4s %s\n' "$(fmt_s $(($(now_us) - T0)))" "$(fmt_s $(($(now_us) - s)))" \
        "$([ $good = 1 ] && echo ok || echo FAIL)" "$desc"
    if [ $good = 0 ]; then
        FAILED=$((FAILED + 1))
        echo "  step $STEPS failed: $why: $*"
        diagnose "$OUT" "$mark" "$since"
        if [ "$KEEP_GOING" != 1 ]; then
            echo "$TEST: FAILED at step $STEPS ($desc); the cluster is left as it is" \
                "(scripts/ganeti-node down cleans up)" >&2
            exit 1
        fi
        return 0
    fi
}
skip() { printf '[%7ss] %6s  %-4s %s\n' "$(fmt_s $(($(now_us) - T0)))" "" skip "$*"; }

