"""The HTML validation report: structure (escaping, no scripts or URLs, one plot per field, bars on both sides)
and, in headless Chromium, that the page really draws the plots and the verdict banner."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sparkinfer.validation.html import CUR_COLOUR, FAIL_COLOUR, MAX_CATEGORIES, REF_COLOUR, render_html, write_html
from sparkinfer.validation.stats import Distribution

EVIL = '<script>alert("x")</script>'
LONG = "a-rather-long-entity-type-name"


def _profile(kind: str, rows: int, *, categorical: dict[str, Any] | None = None,
             numeric: dict[str, Distribution] | None = None, embedding: dict[str, Any] | None = None,
             **counts: int | None) -> dict[str, Any]:
    return {"kind": kind, "rows": rows, "nulls": counts.get("nulls", 0), "errors": counts.get("errors"),
            "truncated": counts.get("truncated"), "empty": counts.get("empty"),
            "categorical": {k: {"counts": v[0], "other": v[1]} for k, v in (categorical or {}).items()},
            "numeric": {k: d.to_dict() for k, d in (numeric or {}).items()}, "embedding": embedding}


def _embedding(rng: np.random.Generator, dim: int = 8, rows: int = 20) -> dict[str, Any]:
    sample = rng.normal(size=(rows, dim)).astype("<f4")
    return {"dim": dim, "centroid": sample.mean(axis=0).tolist(), "sample_rows": rows,
            "sample": base64.b64encode(sample.tobytes()).decode("ascii")}


def _report(passed: bool = False) -> dict[str, Any]:
    """Four columns with a reference (classification, embedding, generation, token classification) and one
    without (extraction): 9 categorical and numeric fields in all."""
    rng = np.random.default_rng(0)
    n = 1000
    entities = {f"{LONG}-{i}": int(c) for i, c in enumerate(rng.integers(5, 200, size=26))}
    columns = {
        "prediction": {"kind": "classification",
                       "reference": _profile("classification", n, categorical={
                           "label": ({"positive": 500, "neutral": 300, "negative": 200}, 0)},
                           numeric={"score": Distribution.from_values(np.round(rng.normal(0.7, 0.1, n), 3))},
                           errors=0, truncated=0),
                       "current": _profile("classification", n, categorical={
                           "label": ({"positive": 200, "neutral": 300, "negative": 480, EVIL: 20}, 0)},
                           numeric={"score": Distribution.from_values(np.round(rng.normal(0.5, 0.15, n), 3))},
                           nulls=3, errors=1, truncated=12)},
        "vector": {"kind": "embedding",
                   "reference": _profile("embedding", n, embedding=_embedding(rng),
                                         numeric={"norm": Distribution.from_values(rng.normal(1, 0.01, n))}),
                   "current": _profile("embedding", n, embedding=_embedding(rng),
                                       numeric={"norm": Distribution.from_values(rng.normal(1.01, 0.02, n))})},
        "summary": {"kind": "generation",
                    "reference": _profile("generation", n, empty=2,
                                          categorical={"finish_reason": ({"stop": 950, "length": 50}, 0)},
                                          numeric={"length": Distribution.from_values(rng.poisson(300, n))}),
                    "current": _profile("generation", n, empty=40, truncated=300,
                                        categorical={"finish_reason": ({"stop": 700, "length": 300}, 0)},
                                        numeric={"length": Distribution.from_values(rng.poisson(420, n))})},
        "ner": {"kind": "token_classification",
                "reference": _profile("token_classification", n, categorical={"entity": (entities, 40)},
                                      numeric={"entities": Distribution.from_values(rng.poisson(3, n))}),
                "current": _profile("token_classification", n,
                                    categorical={"entity": ({k: v + 10 for k, v in entities.items()}, 25)},
                                    numeric={"entities": Distribution.from_values(rng.poisson(4, n))})},
        "fields": {"kind": "extraction", "reference": None,
                   "current": _profile("extraction", n, empty=0, truncated=40,
                                       categorical={"status": ({"ok": 900, "invalid": 60, "truncated": 40}, 0)},
                                       numeric={"length": Distribution.from_values(np.full(n, 42.0))})},
    }
    checks = [
        {"column": "prediction", "metric": "null_rate", "op": "max", "threshold": 0.05, "severity": "warn",
         "value": 0.003, "status": "pass", "message": "prediction null_rate = 0.003 (must be ≤ 0.05)"},
        {"column": "summary", "metric": "finish_reason.js", "op": "max", "threshold": 0.1, "severity": "warn",
         "value": 0.21, "status": "fail", "message": "summary finish_reason.js = 0.21, must be ≤ 0.1"},
        {"column": "vector", "metric": "domain_auc", "op": "max", "threshold": 0.55, "severity": "error",
         "value": None, "status": "skipped", "message": "vector domain_auc: skipped (no domain classifier given)"},
        {"column": "prediction", "metric": "label.psi", "op": "max", "threshold": 0.2, "severity": "error",
         "value": 0.64, "status": "fail", "message": f"prediction label.psi = 0.64, must be ≤ 0.2 ({EVIL})"},
        {"column": "ner", "metric": "entities.ks_pvalue", "op": "min", "threshold": 0.01, "severity": "warn",
         "value": 0.5, "status": "pass", "message": "ner entities.ks_pvalue = 0.5 (must be ≥ 0.01)"},
    ]
    metrics = [
        {"column": "prediction", "metric": "label.psi", "value": 0.6412345, "bound": None, "note": None},
        {"column": "prediction", "metric": "score.wasserstein", "value": 2.01234, "bound": 0.012345, "note": None},
        {"column": "vector", "metric": "domain_auc", "value": None, "bound": None,
         "note": "no domain classifier given"},
    ]
    return {"passed": passed, "created": "2026-12-02T13:00:00+00:00",
            "current": {"source": "main.ml.predictions@v13", "rows": n},
            "reference": {"source": "main.ml.predictions@v12", "rows": n},
            "columns": columns, "metrics": metrics, "checks": checks}


class _Plots(HTMLParser):
    """Every ``svg.plot``: its attributes, its ref/cur bar counts, and its legend entries."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: list[dict[str, Any]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        classes = (dict(attrs).get("class") or "").split()
        if tag == "svg" and "plot" in classes:
            self.plots.append({**dict(attrs), "ref": 0, "cur": 0, "legend": set()})
        elif tag == "rect" and "bar" in classes:
            self.plots[-1]["ref" if "ref" in classes else "cur"] += 1
        elif tag == "rect" and "legend" in classes:
            self.plots[-1]["legend"].add("ref" if "ref" in classes else "cur")


def _plots(page: str) -> _Plots:
    parser = _Plots()
    parser.feed(page)
    return parser


def test_page_is_self_contained_and_escaped() -> None:
    page = render_html(_report())
    assert "<script" not in page.lower()
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<title>sparkinfer validation report" in page
    assert "Generated by sparkinfer; no JavaScript, no network." in page


def test_one_plot_per_field_with_bars_on_both_sides() -> None:
    report = _report()
    parsed = _plots(render_html(report))
    expected = [(name, field, kind) for name, column in report["columns"].items()
                for key, kind in (("categorical", "bars"), ("numeric", "histogram"))
                for field in column["current"][key]]
    assert [(p["data-column"], p["data-field"], p["data-kind"]) for p in parsed.plots] == expected
    for plot in parsed.plots:
        with_reference = plot["data-column"] != "fields"
        assert plot["cur"] > 0, plot
        assert (plot["ref"] > 0) == with_reference, plot
        assert plot["legend"] == ({"ref", "cur"} if with_reference else {"cur"}), plot


def test_categories_are_capped_with_an_other_bar() -> None:
    page = render_html(_report())
    entity = next(p for p in _plots(page).plots if p["data-field"] == "entity")
    assert entity["ref"] == entity["cur"] == MAX_CATEGORIES + 1
    assert "(other)" in page
    assert re.search(f"<title>{LONG}-[0-9]+</title>", page)  # the cut label's full text, as a tooltip
    assert re.search(f">{LONG[:11]}…[0-9a-z-]{{6}}</text>", page)  # cut in the middle


def test_a_constant_field_gets_one_bin() -> None:
    plots = _plots(render_html(_report())).plots
    length = next(p for p in plots if p["data-column"] == "fields" and p["data-field"] == "length")
    assert length["cur"] == 1


def test_integer_values_get_one_bin_per_integer() -> None:
    report = _report()
    column = report["columns"]["ner"]
    values = {p for side in ("current", "reference") for p in column[side]["numeric"]["entities"]["points"]}
    entities = next(p for p in _plots(render_html(report)).plots if p["data-field"] == "entities")
    assert 0 < entities["ref"] <= len(values) and 0 < entities["cur"] <= len(values)


def test_empty_and_constant_fields_render() -> None:
    empty, constant = Distribution.from_values([]), Distribution.from_values([0.73] * 5)
    column = {"kind": "scores", "reference": _profile("scores", 5, numeric={"score": constant, "other": empty},
                                                      categorical={"label": ({}, 0)}),
              "current": _profile("scores", 5, nulls=5, numeric={"score": empty, "other": empty},
                                  categorical={"label": ({}, 0)})}
    report = {**_report(), "columns": {"s": column}}
    plots = _plots(render_html(report)).plots
    assert [(p["data-field"], p["ref"], p["cur"]) for p in plots] == [("label", 0, 0), ("score", 1, 0), ("other", 0, 0)]
    assert render_html(report).count(">no values</text>") == 2


def test_banner_and_check_order() -> None:
    page = render_html(_report(passed=False))
    assert '<div class="banner failed">FAILED</div>' in page
    order = ["label.psi = 0.64", "finish_reason.js = 0.21", "null_rate = 0.003", "entities.ks_pvalue = 0.5",
             "domain_auc: skipped"]
    positions = [page.index(text) for text in order]
    assert positions == sorted(positions)
    assert "≥ 0.01" in page and "≤ 0.2" in page
    assert "2.012" in page and "± 0.01235" in page
    assert '<div class="banner passed">PASSED</div>' in render_html(_report(passed=True))


def test_write_html_writes_utf8(tmp_path: Path) -> None:
    report = _report()
    path = tmp_path / "report.html"
    write_html(report, str(path))
    assert path.read_text(encoding="utf-8") == render_html(report)


def _colour_pixels(pixels: np.ndarray, colour: str, tolerance: int = 6) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels[..., :3].astype(int) - rgb) <= tolerance).all(axis=-1).sum())


def test_chromium_draws_the_plots(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        message = "headless Chromium is needed to render the report; install it with: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, and CI installs it)")
        pytest.skip(message)
    from PIL import Image

    page, png = tmp_path / "report.html", tmp_path / "report.png"
    write_html(_report(passed=False), str(page))
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,4000",
               f"--screenshot={png}", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and png.exists(), f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    if os.environ.get("SPARKINFER_KEEP_SCREENSHOT"):
        shutil.copyfile(png, "/tmp/validation_report_screenshot.png")
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert _colour_pixels(pixels, REF_COLOUR) > 500
    assert _colour_pixels(pixels, CUR_COLOUR) > 500
    assert _colour_pixels(pixels, FAIL_COLOUR) > 5000  # the FAILED banner
