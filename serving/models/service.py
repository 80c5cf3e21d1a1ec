"""The models a client may name: the base model (the router chooses the route for it) and each
registered adapter (its version in force). No HTTP here."""

from __future__ import annotations

import time

from ragtune.serving.fleet import AdapterFleet
from ragtune.serving.models.protocol import ModelCard, ModelList


class ModelCatalog:
    """Usage: `catalog.list()`: the base model's card, then one per adapter."""

    def __init__(self, fleet: AdapterFleet, max_model_len: int) -> None:
        self.fleet = fleet
        self.max_model_len = max_model_len

    def list(self) -> ModelList:
        now = int(time.time())
        base = self.fleet.base_model
        cards = [ModelCard(id=base, created=now, max_model_len=self.max_model_len)]
        cards += [
            ModelCard(
                id=manifest.name,
                created=now,
                parent=base,
                root=manifest.served_name,
                task=manifest.task,
            )
            for manifest in self.fleet.manifests()
        ]
        return ModelList(data=cards)
