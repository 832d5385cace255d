"""``python -m napari_xt``: open napari with the synthetic SAR sample and the xT widget docked."""

from __future__ import annotations


def main() -> None:
    import napari

    viewer = napari.Viewer()
    viewer.open_sample("napari-xt", "sar_scene")
    viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
    napari.run()


if __name__ == "__main__":
    main()
