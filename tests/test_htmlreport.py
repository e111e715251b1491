"""report.html as a browser shows it: rendered by headless Chromium (Debian's `chromium`, which
.ci/run installs), screenshot checked for the plots' colours."""

import math
import shutil
import subprocess

import numpy as np
import pytest

from mathforge import htmlreport as H
from mathforge.scale import ScaleConfig, study
from mathforge.scale_report import write_reports

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
PLOT_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's first colour: curves, bands and bars


def _screenshot(html_file, png):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={png}", "--window-size=1100,2600", html_file.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    import matplotlib.image

    return matplotlib.image.imread(png)[..., :3]


def _blue_pixels(img):
    return int((np.abs(img - PLOT_BLUE).max(axis=-1) < 0.08).sum())


def _rows():
    items = 80
    rows = []
    for size in (100, 200, 400, 800, 1600, 3200):
        for seed in (1, 2, 3):
            acc = min(0.9, 0.12 * math.log2(size / 50) + 0.03 * seed)
            correct = [int(i < acc * items) for i in range(items)]
            rows.append({"key": f"n{size}-s{seed}", "size": size, "seed": seed, "items": {"mini": {
                "ids": [f"q{i:03d}" for i in range(items)], "level": [1 + i % 5 for i in range(items)],
                "subject": [None] * items, "correct": {"symbolic": correct}}}})
    return rows


def test_scaling_report_renders_with_its_plots(tmp_path):
    write_reports(study(_rows(), ScaleConfig(n_boot=100)), tmp_path)
    img = _screenshot(tmp_path / "report.html", tmp_path / "shot.png")
    assert img.std() > 0.05  # not a blank page
    with_plots = _blue_pixels(img)
    # The same page without its figures: tables and text only, next to no plot colour.
    html = (tmp_path / "report.html").read_text()
    bare = html[:html.index("<figure")] + "</body></html>"
    (tmp_path / "bare.html").write_text(bare)
    without = _blue_pixels(_screenshot(tmp_path / "bare.html", tmp_path / "bare.png"))
    assert with_plots > 2_000 and with_plots > 20 * (without + 1)


def test_text_is_escaped(tmp_path):
    page = H.page("a <b> & c", [H.paragraph("<script>x</script>"), H.table(["<th>"], [["<td>"]])])
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;th&gt;" in page
