"""The Upload tab of the data panel: a size-limited upload button, the checks of the bytes, a
private temporary copy read by :func:`xrdwidgets.io.load_stack`.

:class:`UploadTab` is a part of :class:`~xrdwidgets.widgets.data_panel.DataPanel` (a mixin): it
uses the panel's ``state``, status line and job runner (``_start``, ``_show``, ``_publish``,
``busy``, ``_hide``).
"""
from __future__ import annotations

import itertools
import shutil
import weakref

import ipywidgets as w

from .. import io
from ..base import safety
from ..base.progress import Progress
from .upload import SizeLimitedUpload

__all__ = ["UploadTab", "NPY_AXIS_ORDERS"]

#: Axis orders offered for ``.npy`` files (the spectral axis is read as ``channel``).
NPY_AXIS_ORDERS = tuple(itertools.permutations(("translation", "angle", "channel")))


class UploadTab:
    """The Upload tab of :class:`~xrdwidgets.widgets.data_panel.DataPanel` (a mixin)."""

    def _build_upload(self):
        mb = self.max_upload_bytes / 2**20
        self.upload = self._new_uploader()
        self.upload_npy_order = w.Dropdown(options=[(" × ".join(o), o) for o in NPY_AXIS_ORDERS],
                                           description="npy axes", style={"description_width": "5em"},
                                           layout=w.Layout(width="32em"))
        self.upload_sinogram = w.Dropdown(options=[], description="Sinogram",
                                          style={"description_width": "5em"},
                                          layout=w.Layout(display="none", width="32em"))
        self.upload_load_button = w.Button(description="Load upload", icon="upload", disabled=True)
        self.upload_load_button.add_class("xrdw-load-upload")
        self.upload_load_button.on_click(lambda _: self.load_upload())
        note = w.HTML(f"<small>HDF5 (own layout, nDTomo, SD2I) or <code>.npy</code> (choose its axis "
                      f"order first), up to {mb:.0f} MB. Larger files: put them in the data folder.</small>")
        self._upload_box = w.VBox([note, self.upload, self.upload_npy_order, self.upload_sinogram,
                                   self.upload_load_button])
        return self._upload_box

    def _new_uploader(self) -> SizeLimitedUpload:
        mb = self.max_upload_bytes / 2**20
        up = SizeLimitedUpload(self.max_upload_bytes, accept=",".join(sorted(safety.UPLOAD_SUFFIXES)),
                               description=f"Upload (≤ {mb:.0f} MB)", layout=w.Layout(width="16em"))
        up.add_class("xrdw-upload")
        up.observe(self._on_upload, "value")
        up.observe(self._on_rejected, "rejected")
        return up

    def renew_uploader(self):
        """Replace the upload button by a fresh one.

        Done after every upload (so no reference to its bytes stays in a widget) and whenever
        the visitor leaves the Upload tab (not on entering it: a click right after would reach
        the old button), so a button left in any odd state in the page is never reused.
        """
        old, self.upload = self.upload, self._new_uploader()
        self.upload.disabled = self.busy
        self._upload_box.children = tuple(self.upload if c is old else c for c in self._upload_box.children)
        old.unobserve(self._on_upload, "value")
        old.unobserve(self._on_rejected, "rejected")
        old.close()

    def _on_tab(self, change):
        if change["old"] == 1:
            self.renew_uploader()


    # ------------------------------------------------------------------ upload
    def _on_upload(self, change):
        files = change["new"]
        if not files:
            return
        entry = files[0]
        name, content = str(entry.get("name", "upload")), entry.get("content", b"")
        self.renew_uploader()       # drops the bytes from the widget state at once
        self.handle_upload(name, content)

    def _on_rejected(self, change):
        info = change["new"] or {}
        if info:
            size, name = int(info.get("size", 0)), str(info.get("name", "upload"))
            self._show(safety.too_large_message(name, size, self.max_upload_bytes)
                       + " (refused in the browser: nothing was sent)", "error")

    def handle_upload(self, name: str, content):
        """Check, store and (when unambiguous) load an uploaded file, as a job; returns the job."""
        if self.busy:
            self._show("busy: wait for the current load to finish, then upload again", "error")
            return None
        try:  # cheap checks at once, so a wrong file is refused before anything is written
            safety.check_upload(name, content, max_bytes=self.max_upload_bytes)
        except safety.UploadError as exc:
            self._show(str(exc), "error")
            return None
        self._discard_upload()
        shown = safety.safe_filename(name)
        dims = self.upload_npy_order.value

        def work():
            path = safety.write_upload(name, content, max_bytes=self.max_upload_bytes)
            # removed on the next upload, on close, when the panel is collected, or when the
            # kernel ends (a finalizer runs at interpreter exit)
            self._upload_cleanup = weakref.finalize(self, shutil.rmtree, str(path.parent), True)
            self._upload_path, self._upload_name = path, shown
            self._hide[str(path)] = shown
            self._hide[str(path.parent)] = "upload"
            kind, names = io.probe_stack(path)
            yield Progress(1, 2)
            if kind == "sd2i" and len(names) > 1:
                self.upload_sinogram.options = names
                self.upload_sinogram.value = names[0]
                self.upload_sinogram.layout.display = ""
                return f"{shown} holds {len(names)} sinograms: choose one and press 'Load upload'"
            self.upload_sinogram.options = names or []
            self.upload_sinogram.layout.display = "none"
            stack, truth, stored = io.load_stack(path, variable=names[0] if names else None, npy_dims=dims)
            yield Progress(2, 2)
            return self._publish(stack, truth, shown, stored)

        return self._start(f"reading {shown}", work)

    def load_upload(self):
        """(Re-)load the last uploaded file with the chosen sinogram / axis order; returns the job."""
        path, shown = self._upload_path, self._upload_name
        if path is None:
            self._show("upload a file first", "error")
            return None
        sino = self.upload_sinogram.value if self.upload_sinogram.layout.display != "none" else None
        dims = self.upload_npy_order.value

        def work():
            stack, truth, stored = io.load_stack(path, variable=sino, npy_dims=dims)
            yield Progress(1, 1)
            return self._publish(stack, truth, shown + (f" [{sino}]" if sino else ""), stored)

        return self._start(f"reading {shown}", work, {str(path): shown, str(path.parent): "upload"})

    def _discard_upload(self):
        cleanup = getattr(self, "_upload_cleanup", None)
        if cleanup is not None:
            cleanup()
        if self._upload_path is not None:
            shutil.rmtree(self._upload_path.parent, ignore_errors=True)
        self._upload_path, self._upload_name = None, ""
        self.upload_load_button.disabled = True
