"""A model as an endpoint serves it: loaded from a folder or a registered version, and, for a
registry alias (``models:/NAME@production``), switched to a new version when the alias moves.

A thread looks the alias up every ``reload_interval_s``. When it names another version, the thread
loads that version beside the one serving, then replaces the variant's ``current`` in one
assignment. Requests that already took the old version finish on it; later ones get the new one.
A promotion or a roll-back thus reaches every running replica within one interval, with no
restart and no failed request. A version that answers other tasks than the one serving is refused
(the API's request schema names the tasks), and so is one that fails to load: the replica keeps
serving what it has, and logs why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mtl import storage
from mtl.inference.model_folder import model_version
from mtl.inference.reference import read_reference
from mtl.lifecycle.registry import is_registered, resolve_model
from mtl.serving.routing import Backend, Loaded, Variant, model_info
from mtl.serving.schema import ModelInfo, VariantSettings

logger = logging.getLogger("mtl.serving.deployments")


def answered_tasks(info: ModelInfo) -> list[str]:
    return [task.name for task in info.tasks if task.kind != "similarity"]


def follows_an_alias(reference: str) -> bool:
    """True for ``models:/NAME@ALIAS``, whose version can move; a folder or ``models:/NAME/3`` cannot."""
    return is_registered(reference) and "@" in reference


class ServedModel:
    """One variant of an endpoint replica; ``load(folder)`` makes the backend of a model folder."""

    def __init__(self, variant: VariantSettings, load: Callable[[str], Backend], *, reload_interval_s: float):
        self.reference, self.load, self.name = variant.model, load, variant.name
        self.variant = Variant(variant.name, variant.weight, self._loaded(self._folder()))
        self._stop = threading.Event()
        if reload_interval_s and follows_an_alias(self.reference):
            self._watcher = threading.Thread(target=self._watch, args=(reload_interval_s,), daemon=True,
                                             name=f"reload-{variant.name}")
            self._watcher.start()

    def _folder(self) -> str:
        return storage.absolute(resolve_model(self.reference))

    def _loaded(self, folder: str) -> Loaded:
        registered = self.reference if is_registered(self.reference) else None
        info = model_info(folder).model_copy(update={"variant": self.name, "registered": registered})
        return Loaded(self.load(folder), info, read_reference(folder))

    def reload(self) -> bool:
        """Look the reference up again; switch to a new version when there is one. True if it switched."""
        folder = self._folder()
        serving = self.variant.current.info
        if model_version(folder) == serving.version:
            return False
        loaded = self._loaded(folder)
        if answered_tasks(loaded.info) != answered_tasks(serving):
            logger.error("%s now names a model with tasks %s; this endpoint serves %s: keeping version %s",
                         self.reference, answered_tasks(loaded.info), answered_tasks(serving), serving.version)
            return False
        self.variant.current = loaded
        logger.info("variant %s: %s moved from version %s to %s", self.name, self.reference,
                    serving.version, loaded.info.version)
        return True

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.reload()
            except Exception as error:  # noqa: BLE001 - a failed look-up must never stop the serving
                logger.warning("looking up %s again failed (%s); keeping version %s", self.reference, error,
                               self.variant.current.info.version)

    def stop(self) -> None:
        self._stop.set()
