"""A file-upload button that checks the size in the browser, before anything is sent.

:class:`ipywidgets.FileUpload` reads the chosen file in the page and sends it to the kernel as
*one* websocket message; a file larger than the server's websocket limit never arrives (Tornado
drops the connection) and the upload is lost without a word, while the kernel cannot check a size
it never receives. :class:`SizeLimitedUpload` does the check where the file is: a file larger
than ``max_bytes`` is not read; the page sends only its name and size (a few bytes), and the
kernel can say what happened. A file within the limit is sent as one binary buffer of a custom
message — never stored in the widget's synced state, so its bytes do not linger in the page or
the kernel.

It is a few lines of JavaScript through ``anywidget`` (which plotly's ``FigureWidget`` needs
anyway). The Python side mirrors :class:`ipywidgets.FileUpload`: ``value`` is a tuple of one dict
``{"name", "type", "size", "content" (memoryview), "last_modified"}`` after an upload (observe it),
and ``rejected`` a dict ``{"name", "size", "count"}`` for every refused file.
"""
from __future__ import annotations

import datetime
import logging

import anywidget
import traitlets
from ..base.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["SizeLimitedUpload"]

_ESM = """
function render({ model, el }) {
  const input = document.createElement("input");
  input.type = "file";
  input.style.display = "none";
  const button = document.createElement("button");
  button.className = "jupyter-button widget-button";
  button.style.width = "100%";
  let sending = false;
  const sync = () => {
    button.textContent = sending ? "Uploading…" : model.get("description");
    button.disabled = sending || model.get("disabled");
    input.accept = model.get("accept");
  };
  sync();
  model.on("change:description", sync);
  model.on("change:disabled", sync);
  model.on("change:accept", sync);
  button.addEventListener("click", () => { input.value = ""; input.click(); });
  input.addEventListener("change", async () => {
    const f = input.files && input.files[0];
    input.value = "";
    if (!f) return;
    if (f.size > model.get("max_bytes")) {
      model.send({ event: "rejected", name: f.name, size: f.size });
      return;
    }
    sending = true; sync();
    try {
      const buf = await f.arrayBuffer();
      model.send({ event: "upload", name: f.name, size: f.size, type: f.type,
                   last_modified: f.lastModified }, undefined, [buf]);
    } finally {
      sending = false; sync();
    }
  });
  el.appendChild(input);
  el.appendChild(button);
}
export default { render };
"""


class SizeLimitedUpload(anywidget.AnyWidget):
    """Upload button for one file of at most ``max_bytes``, refused in the browser if larger.

    Parameters
    ----------
    max_bytes : int
        Largest accepted file (bytes).
    description : str
        Button text.
    accept : str
        File-chooser filter, e.g. ``".h5,.npy"``.
    """

    _esm = _ESM
    description = traitlets.Unicode("Upload").tag(sync=True)
    accept = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)
    max_bytes = traitlets.Int(1).tag(sync=True)
    #: ``({"name", "type", "size", "content", "last_modified"},)`` after an upload (not synced).
    value = traitlets.Tuple()
    #: ``{"name", "size", "count"}`` of the last file refused for its size (not synced).
    rejected = traitlets.Dict()

    def __init__(self, max_bytes: int, **kwargs):
        if isinstance(max_bytes, bool) or int(max_bytes) <= 0:
            raise InputError(f"SizeLimitedUpload: max_bytes must be a positive number of bytes, "
                             f"found {max_bytes!r}")
        super().__init__(max_bytes=int(max_bytes), **kwargs)
        self.on_msg(self._on_page_message)

    def _on_page_message(self, _, content, buffers):
        event = content.get("event") if isinstance(content, dict) else None
        name = str(content.get("name", "upload")) if event else ""
        if event == "rejected":
            self.rejected = {"name": name, "size": int(content.get("size", 0)),
                             "count": self.rejected.get("count", 0) + 1}
        elif event == "upload" and buffers:
            data = buffers[0]
            stamp = content.get("last_modified")
            when = (datetime.datetime.fromtimestamp(stamp / 1000, datetime.timezone.utc)
                    if isinstance(stamp, (int, float)) else None)
            self.value = ({"name": name, "type": str(content.get("type", "")), "size": len(data),
                           "content": memoryview(data), "last_modified": when},)
        else:
            log.warning("SizeLimitedUpload: ignored a message from the page: %r", event)
