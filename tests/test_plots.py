"""Figures are written whole or not at all."""

import pytest

from ippo_cli.plots import figure, label


def test_a_figure_is_written_as_a_png(tmp_path):
    out = tmp_path / "curve.png"
    with figure(out) as ax:
        ax.plot([0, 1], [1, 0], label="line")
        label(ax, "x", "y", "title")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_a_failure_while_drawing_keeps_the_previous_file_and_leaves_no_partial_one(tmp_path):
    out = tmp_path / "curve.png"
    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError), figure(out) as ax:
        ax.plot([0, 1], [1, 0])
        raise RuntimeError("drawing failed")
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_columns_give_a_row_of_axes(tmp_path):
    with figure(tmp_path / "row.png", size=(8, 3), columns=3) as axes:
        assert len(axes) == 3
        for ax in axes:
            ax.plot([0, 1], [0, 1])
    assert (tmp_path / "row.png").stat().st_size > 0
