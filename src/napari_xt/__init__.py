"""napari-xt: run xT on the image in the viewer and overlay its results.

The heavy lifting lives in :mod:`xt_engine`; this package holds only the napari side (dock widget,
sample data). Importing it does not import Qt; the widget module does.
"""

__version__ = "0.1.0"
