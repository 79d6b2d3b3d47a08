"""The WSOL demo (python -m camfast.wsol.demo) at a reduced size: runs, is deterministic, writes its
table and its overlays."""

from __future__ import annotations

import pytest

pytest.importorskip("cv2")
pytest.importorskip("matplotlib")

from camfast.wsol import demo  # noqa: E402


def small_config(tmp_path, name):
    return demo.Config(seed=3, image_size=24, train_images=64, test_images=16, steps=3, batch_size=8,
                       out=tmp_path / name, cam_curve_interval=0.01)


def test_demo_is_deterministic_and_writes_its_outputs(tmp_path):
    notes = []
    first = demo.run(small_config(tmp_path, "a.png"), log=notes.append)
    second = demo.run(small_config(tmp_path, "b.png"), log=notes.append)
    assert first == second
    assert list(first) == [v + nwc for v in ("GAP", "TAP", "ADL") for nwc in ("", " + NWC")]
    assert any(n.startswith("trained ADL") for n in notes)
    images = small_config(tmp_path, "c.png").test_images
    for name, row in first.items():
        # Every column counts test images (MaxBoxAccV2 averages three IoU thresholds' counts).
        for column, value in row.items():
            step = 100.0 / images / (3 if column == "MaxBoxAccV2" else 1)
            assert 0.0 <= value <= 100.0 and value == pytest.approx(step * round(value / step)), (name, column, value)
        # Top-1 localization needs the class and the box right at the PaS threshold.
        assert row["Top-1 Loc PaS"] <= min(row["top-1 cls"], row["GT-known PaS"])
        if name.endswith(" + NWC"):  # NWC changes the CAM only, never the logits
            assert row["top-1 cls"] == first[name.removesuffix(" + NWC")]["top-1 cls"]
    assert (tmp_path / "a.png").stat().st_size > 0
    table = demo.format_table(first)
    assert table.splitlines()[0].startswith("| model | top-1 cls | MaxBoxAcc | MaxBoxAccV2 |")


def test_demo_command_line(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert demo.main(["--image-size", "24", "--train-images", "32", "--test-images", "8", "--steps", "2",
                      "--batch-size", "8", "--cam-curve-interval", "0.05", "--out", str(out)]) == 0
    assert "| GAP + NWC |" in capsys.readouterr().out
    assert out.stat().st_size > 0
