"""The image store (seed ch. 4 §4.4 and ch. 11): layers, images and tags, and the image jobs.

* :mod:`~engine.graph.graph`: the :class:`~engine.graph.graph.Graph`, which resolves what users
  type to images, registers and deletes them with Docker's rules and builds the API's documents;
* :mod:`~engine.graph.layers` (the layer store, tar-split records, on top of the graph driver),
  :mod:`~engine.graph.images` (image configs) and :mod:`~engine.graph.tagstore` (repositories and tags);
* :mod:`~engine.graph.load`, :mod:`~engine.graph.save` and :mod:`~engine.graph.imports`:
  ``docker load``, ``save`` and ``import``; :mod:`~engine.graph.pools`: one pull or push per image;
* :mod:`~engine.graph.jobs`: the image jobs the API runs.

Image names are :mod:`engine.reference`'s; layer tars are :mod:`engine.archive`'s.
"""
