"""A throwaway third-party graph driver, installed by the tests with pip.

It imports only the driver SDK (:mod:`engine.drivers`, :mod:`engine.errors`).
"""

from __future__ import annotations

import os
import shutil

from engine.drivers.graph import NaiveDiffDriver
from engine.errors import InvalidParameter, NotSupported

#: ``--storage-opt fakefs.refuse=REASON`` makes the probe refuse with REASON.
REFUSE = "fakefs.refuse="


class FakeFsDriver(NaiveDiffDriver):
    """Third-party test driver: plain directories, no copy of the parent."""

    name = "fakefs"

    def __init__(self, home, options=()):
        super().__init__(home, options)
        os.makedirs(home, exist_ok=True)

    @classmethod
    def probe(cls, home, options=()):
        for option in options:
            if not option.startswith(REFUSE):
                raise InvalidParameter(f"fakefs: unknown option {option!r}")
            raise NotSupported(f"fakefs refuses: {option[len(REFUSE) :]}")

    def _dir(self, id):
        return os.path.join(self.home, id)

    def create(self, id, parent=None, mount_label=""):
        os.mkdir(self._dir(id))

    def remove(self, id):
        shutil.rmtree(self._dir(id))

    def get(self, id, mount_label=""):
        return self._dir(id)

    def put(self, id):
        pass

    def exists(self, id):
        return os.path.isdir(self._dir(id))

    def status(self):
        return [("Fake", "yes")]
