#!/usr/bin/env bash
# A run's report.html in a real browser: headless Chromium (Debian's `chromium`) renders it to
# a PNG of the whole page, and the check fails on any console message but its own, on an image
# that does not decode and on a missing section (the Pareto front's too, in a run with
# objectives). Outside CI (CI parses the HTML: tests/test_report.py).
#
#   benchmarks/check_report.sh [RUN_DIR] [OUT.png]
#
# RUN_DIR: a run directory written by tinyevo fit (its report is rewritten first); without it
# a tiny seeded digits run is made in a temporary folder (about 10 s), and its report is kept
# beside the screenshot (OUT.html). OUT.png defaults to report.png here. The page is loaded
# twice: once to measure its height, once to take the screenshot at that height (HEIGHT, in
# pixels, sets it instead; Chromium draws at most 16384).
# Needs: apt-get install -y chromium (and graphviz for the Graphviz picture).
set -euo pipefail

run=${1:-}
out=$(realpath -m "${2:-report.png}")
[ -z "$run" ] || run=$(realpath "$run")
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$browser" ]; then
    echo "check_report: no chromium on PATH: apt-get install -y chromium (or set CHROMIUM)" >&2
    exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "$run" ]; then
    run="$work/run"
    python -m tinyevo.cli fit --generations 3 --population 4 --batches-per-generation 2 \
        --dir "$run" --workers 1 --no-progress > "$work/fit.log"
    report="${out%.png}.html"
    cp "$run/report.html" "$report"
else
    python -m tinyevo.cli report "$run" > /dev/null
    report="$run/report.html"
fi

# A copy of the page with a script that reports, once everything loaded, the page's height,
# each image that did not decode and each section missing (the report itself has no script).
python - "$run" "$work/checked.html" <<'EOF'
import json, sys
from tinyevo.app.report import REPORT_FILE, SECTIONS
from tinyevo.app.summary import run_summary

page = open(f"{sys.argv[1]}/{REPORT_FILE}", encoding="utf-8").read()
front = run_summary(sys.argv[1]).front is not None
wanted = [k for k in SECTIONS if k != "front" or front]
script = f"""<script>
addEventListener("load", () => {{
  const bad = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0));
  bad.forEach(i => console.error("check_report: image did not decode: " + i.alt));
  const gone = {json.dumps(wanted)}.filter(id => !document.getElementById(id));
  gone.forEach(id => console.error("check_report: no section " + id));
  console.log("check_report: height " + document.documentElement.scrollHeight);
  if (!bad.length && !gone.length)
    console.log("check_report: ok, " + document.images.length + " images");
}});
</script>"""
open(sys.argv[2], "w", encoding="utf-8").write(page.replace("</body>", script + "\n</body>"))
EOF

# render HEIGHT LOG: a screenshot of the checked page in a window 1280 wide, HEIGHT tall.
render() {
    local status=0
    timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --enable-logging=stderr --v=0 --virtual-time-budget=10000 \
        --window-size="1280,$1" --screenshot="$out" \
        "file://$work/checked.html" > /dev/null 2> "$2" || status=$?
    if [ "$status" -ne 0 ] || [ ! -s "$out" ]; then
        echo "check_report: chromium failed (exit $status), no screenshot; its log:" >&2
        tail -20 "$2" >&2
        exit 1
    fi
}

height=${HEIGHT:-}
if [ -z "$height" ]; then
    render 1000 "$work/measure.log"
    height=$(grep -oE 'check_report: height [0-9]+' "$work/measure.log" | grep -oE '[0-9]+$' || true)
    [ -n "$height" ] || height=6000                  # the script did not run: reported below
    height=$(( height > 16384 ? 16384 : height ))
fi
render "$height" "$work/chromium.log"
console=$(grep -E ':CONSOLE' "$work/chromium.log" | grep -v 'check_report: height' || true)
if [ -n "$(grep -v 'check_report: ok' <<<"$console")" ] || ! grep -q 'check_report: ok' <<<"$console"; then
    echo "check_report: FAILED: $report in Chromium:" >&2
    echo "${console:-(no message: the check script did not run)}" >&2
    exit 1
fi
images=$(sed -E 's/.*ok, ([0-9]+) images.*/\1/' <<<"$console")
echo "check_report: $report renders without errors ($images images, ${height} px tall): $out"
