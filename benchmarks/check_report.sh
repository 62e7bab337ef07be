#!/usr/bin/env bash
# A run's report.html in a real browser: headless Chromium (Debian's `chromium`) renders it to
# a PNG, and the check fails on any console message but its own, on an image that does not
# decode and on a missing section. Outside CI (CI parses the HTML: tests/test_report.py).
#
#   benchmarks/check_report.sh [RUN_DIR] [OUT.png]
#
# RUN_DIR: a run directory written by tinyevo fit (its report is rewritten first); without it
# a tiny seeded digits run is made in a temporary folder (about 10 s). OUT.png defaults to
# report.png here. HEIGHT (pixels, default 6000) is the window's height, so the screenshot's.
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
else
    python -m tinyevo.cli report "$run" > /dev/null
fi

# A copy of the page with a script that reports, once everything loaded, each image that did
# not decode and each section missing (the report itself has no script).
python - "$run/report.html" "$work/checked.html" <<'EOF'
import json, sys
from tinyevo.app.report import SECTIONS

page = open(sys.argv[1], encoding="utf-8").read()
wanted = [k for k in SECTIONS if k != "front"]
script = f"""<script>
addEventListener("load", () => {{
  const bad = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0));
  bad.forEach(i => console.error("check_report: image did not decode: " + i.alt));
  const gone = {json.dumps(wanted)}.filter(id => !document.getElementById(id));
  gone.forEach(id => console.error("check_report: no section " + id));
  if (!bad.length && !gone.length)
    console.log("check_report: ok, " + document.images.length + " images");
}});
</script>"""
open(sys.argv[2], "w", encoding="utf-8").write(page.replace("</body>", script + "\n</body>"))
EOF

status=0
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --enable-logging=stderr --v=0 --virtual-time-budget=10000 \
    --window-size="1280,${HEIGHT:-6000}" --screenshot="$out" \
    "file://$work/checked.html" > /dev/null 2> "$work/chromium.log" || status=$?
console=$(grep -E ':CONSOLE' "$work/chromium.log" || true)
if [ "$status" -ne 0 ] || [ ! -s "$out" ]; then
    echo "check_report: chromium failed (exit $status), no screenshot; its log:" >&2
    tail -20 "$work/chromium.log" >&2
    exit 1
fi
if [ -n "$(grep -v 'check_report: ok' <<<"$console")" ] || ! grep -q 'check_report: ok' <<<"$console"; then
    echo "check_report: FAILED: $run/report.html in Chromium:" >&2
    echo "${console:-(no message: the check script did not run)}" >&2
    exit 1
fi
echo "check_report: $run/report.html renders without errors ($(sed -E 's/.*ok, ([0-9]+) images.*/\1/' <<<"$console") images): $out"
