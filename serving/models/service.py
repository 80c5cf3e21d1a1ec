"""The models a client may name: the base model (the router chooses the route for it), each
registered adapter (its version in force) and the embedding model (POST /v1/embeddings). No
HTTP here."""

from __future__ import annotations

import time

from ragtune.retrieval.embedder import Embedder
from ragtune.serving.fleet import AdapterFleet
from ragtune.serving.models.protocol import ModelCard, ModelList
from ragtune.serving.tenants.principal import OPERATOR, Principal


class ModelCatalog:
    """Usage: `catalog.list(principal)`: the base model's card, one per adapter the principal
    sees, then the embedding model's."""

    def __init__(
        self, fleet: AdapterFleet, max_model_len: int, embedder: Embedder | None = None
    ) -> None:
        self.fleet = fleet
        self.max_model_len = max_model_len
        self.embedder = embedder

    def list(self, principal: Principal = OPERATOR) -> ModelList:
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
            if principal.sees_adapter(manifest.name)
        ]
        if self.embedder is not None:
            model_id = self.embedder.model_id
            owner = model_id.split("/", 1)[0] if "/" in model_id else "ragtune"
            cards.append(
                ModelCard(
                    id=model_id,
                    created=now,
                    owned_by=owner,
                    max_model_len=self.embedder.max_tokens,
                    task="Embeddings (POST /v1/embeddings).",
                )
            )
        return ModelList(data=cards)
