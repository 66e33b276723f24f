"""Images from Dockerfiles and from containers: the classic builder and ``commit``.

* :mod:`~engine.builder.context`: the build context (a tar or a remote
  tarball) unpacked in the build's own directory; the Dockerfile found and
  read; :mod:`~engine.builder.dockerignore`: ``.dockerignore`` patterns;
* :mod:`~engine.builder.parser`: Dockerfile text to stages, with moby's
  parser (the ``dockerfile`` package) and the classic builder's rules;
  :mod:`~engine.builder.shell`: variable expansion and quoting;
  :mod:`~engine.builder.buildargs`: ``ARG`` and ``--build-arg``;
* :mod:`~engine.builder.builder`: the instructions, step by step, through
  the daemon's life cycle and the graph driver;
  :mod:`~engine.builder.cache`: the build cache (images are the cache);
  :mod:`~engine.builder.images`: a child image's layer and config, as
  dockerd writes them;
* :mod:`~engine.builder.jobs`: the ``build``, ``commit`` and
  ``build_prune`` jobs (routes in :mod:`engine.api.build`).
"""
