"""Opens a report in headless Chromium (Debian's package) and measures what a person sees:
overlapping text (bounding boxes of headings, captions and every SVG text of one figure) and
figures that do not render (an SVG or image without a size)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

CHECK = """
<script>
window.addEventListener('load', () => {
  const overlaps = [];
  const area = r => Math.max(0, r.width) * Math.max(0, r.height);
  const meet = (a, b) => {
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    return w > 0 && h > 0 ? w * h : 0;
  };
  const groups = [[...document.querySelectorAll('h1, h2, caption, p')]];
  document.querySelectorAll('svg').forEach(svg => groups.push([...svg.querySelectorAll('text')]));
  for (const group of groups) {
    const items = group.map(e => [e, e.getBoundingClientRect()]).filter(([e, r]) => e.textContent.trim() && area(r) > 0);
    for (let i = 0; i < items.length; i++) for (let j = i + 1; j < items.length; j++) {
      const [a, ra] = items[i], [b, rb] = items[j];
      if (a.contains(b) || b.contains(a)) continue;
      if (meet(ra, rb) > 0.2 * Math.min(area(ra), area(rb)))
        overlaps.push([a.textContent.trim().slice(0, 60), b.textContent.trim().slice(0, 60)]);
    }
  }
  const svgs = [...document.querySelectorAll('svg')];
  const blank = svgs.filter(s => area(s.getBoundingClientRect()) === 0).length
    + [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute('data-check', JSON.stringify({overlaps, figures: svgs.length, blank}));
});
</script>
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check_page(page: Path, workdir: Path) -> dict:
    """{'overlaps': [[text, text], …], 'figures': n, 'blank': n} as Chromium laid the page out."""
    probe = workdir / f"probe-{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={workdir / 'chromium-profile'}", "--window-size=1400,1000", "--virtual-time-budget=10000",
         "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    match = re.search(r'data-check="([^"]*)"', proc.stdout)
    if not match:
        raise AssertionError(f"Chromium did not run the check (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(html.unescape(match.group(1)))
