"""The endpoint's answer cache: a repeated text is answered without the model."""

from __future__ import annotations

from collections import OrderedDict

from mtl.inference.answers import Prediction


class AnswerCache:
    """A bounded LRU of predictions keyed by (text, tasks); size 0 keeps nothing."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[tuple, Prediction] = OrderedDict()

    def get(self, text: str, tasks: tuple[str, ...]) -> Prediction | None:
        key = (text, tasks)
        if key in self._entries:
            self._entries.move_to_end(key)
        return self._entries.get(key)

    def put(self, text: str, tasks: tuple[str, ...], prediction: Prediction) -> None:
        if self.size:
            self._entries[(text, tasks)] = prediction
            self._entries.move_to_end((text, tasks))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
