"""The registry client: OCI distribution / Docker registry v2 (seed ch. 10, over today's protocol).

* :mod:`~engine.registry.auth`: ``X-Registry-Auth``, ``WWW-Authenticate``
  challenges, bearer tokens and their cache;
* :mod:`~engine.registry.endpoints`: where a registry is (mirrors for Docker
  Hub, ``https``/``http`` for insecure registries, ``certs.d`` TLS material);
* :mod:`~engine.registry.session`: one session per operation over the v2 HTTP
  API, with authentication, retries and back-off;
* :mod:`~engine.registry.manifest`: media types, manifests, manifest lists and
  platforms;
* :mod:`~engine.registry.metadata`: which registry blobs hold which layers;
* :mod:`~engine.registry.pull` and :mod:`~engine.registry.push`: the transfers;
* :mod:`~engine.registry.jobs`: the ``pull``, ``push``, ``auth`` and
  ``search`` jobs.
"""

#: Layers a pull downloads, and a push uploads, at once: dockerd's defaults of
#: ``max-concurrent-downloads`` and ``max-concurrent-uploads`` (the daemon's
#: configuration takes them from here).
DEFAULT_MAX_CONCURRENT_DOWNLOADS = 3
DEFAULT_MAX_CONCURRENT_UPLOADS = 5
