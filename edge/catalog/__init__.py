"""Visual search of the catalog: the items, their vectors, the Annoy or exact index that
finds them (its spec `index.json` and the generations of files it names), its tuning, the
optional PCA projection and the on-device enrolment delta. Plain numpy and Annoy; no model
is run here (see `shelfsight.edge.indexing`)."""
from .items import Catalog, CatalogItem
from .search import CatalogIndex, IndexOptions, Match
from .tuning import TuningOptions, TuningReport

__all__ = ["Catalog", "CatalogIndex", "CatalogItem", "IndexOptions", "Match", "TuningOptions", "TuningReport"]
