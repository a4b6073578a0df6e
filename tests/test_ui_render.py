"""Tests for :mod:`brats_seg.ui.render`: the tables' HTML holds the numbers the dashboard keeps."""

from __future__ import annotations

from test_ui_support import parse_table

from brats_seg.ui import render

#: The shared fixtures (``app``, ``tiny_paths``, and no test reaching the public example address).
pytest_plugins = ["test_ui_support"]


def test_parse_table_round_trip() -> None:
    table = render.volumes_html(
        {
            "labels": {n: {"mL": 1.0 / 3} for n in ("NCR", "ED", "ET")},
            "regions": {n: {"mL": 2.5} for n in ("ET", "TC", "WT")},
        }
    )
    assert parse_table(table)["NCR"]["prediction"] == 1.0 / 3
    assert parse_table(table) == render.volume_rows(
        {
            "labels": {n: {"mL": 1.0 / 3} for n in ("NCR", "ED", "ET")},
            "regions": {n: {"mL": 2.5} for n in ("ET", "TC", "WT")},
        }
    )
    assert ">0.33<" in table


def test_volumes_table_shows_the_range_over_the_other_thresholds() -> None:
    vols = {
        "labels": {n: {"mL": 1.0} for n in ("NCR", "ED", "ET")},
        "regions": {n: {"mL": 3.0} for n in ("ET", "TC", "WT")},
    }
    volume_range = {
        "thresholds": [0.7, 0.3],
        "card_threshold": 0.5,
        "labels": {
            "NCR": [0.5, 1.5],
            "ED": [1.2, 0.9],
            "ET": [0.25, 1.0],
        },  # a label need not grow as the cut falls
        "regions": {"ET": [0.25, 1.0], "TC": [2.0, 4.0], "WT": [2.5, 3.75]},
    }
    table = render.volumes_html(vols, None, volume_range)
    shown = parse_table(table)
    assert shown["ED"] == {"prediction": 1.0, "range_low": 0.9, "range_high": 1.2}
    assert shown == render.volume_rows(vols, None, volume_range)  # the page shows the numbers the app keeps
    assert shown["WT"]["range_low"] == 2.5 and shown["WT"]["range_high"] == 3.75
    assert "range at 0.7\u20130.3 (mL)" in table and ">2.50</span>\u2013<span" in table
    assert "instead of 0.5 to count" in table and "not a confidence interval" in table
    # without a range (a softmax model, or none measured): no column, no note
    plain = render.volumes_html(vols)
    assert "range at" not in plain and "brats-range-note" not in plain
