"""Built-in node packs. Each module is an ordinary nodegraph plugin (it implements ``nodegraph_nodes``).

Modules here must not import torch or diffusers at import time: the catalogue loads in well under a second and
heavy imports happen inside ``execute``.
"""
