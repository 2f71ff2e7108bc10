"""Request and response bodies of the REST API: the public contract the OpenAPI snapshot pins.

Only the *shape* of a request is checked here (types, required fields, no unknown fields); limits that
depend on settings (max texts, max characters, max k, known languages) are the engine's, so REST and
gRPC reject the same request with the same message. Native requests forbid unknown fields because a
typo such as "lang" for "langs" would otherwise silently search every language; the OpenAI-compatible
request ignores them because OpenAI clients add fields over time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError


class Strict(BaseModel):
    """Base of native requests: unknown fields are errors that name the field."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------- errors
class ErrorBody(BaseModel):
    type: str = Field(description="Error kind, stable for programs to branch on.", examples=["invalid_input"])
    message: str = Field(
        description="What is wrong, naming the field or limit; safe to show to users.",
        examples=["k must be an integer from 1 to max_k=100, got 0"],
    )


class ErrorResponse(BaseModel):
    """Every native endpoint answers errors in this one shape."""

    error: ErrorBody


class OpenAIErrorBody(BaseModel):
    message: str = Field(description="What is wrong; OpenAI clients show it in their exception.")
    type: str = Field(description="OpenAI error category.", examples=["invalid_request_error"])
    param: str | None = Field(None, description="The request field at fault, when one is.", examples=["input"])
    code: str | None = Field(None, description="xret's error kind.", examples=["invalid_input"])


class OpenAIErrorResponse(BaseModel):
    """Errors of /v1 routes, in the shape OpenAI clients parse."""

    error: OpenAIErrorBody


# --------------------------------------------------------------------------------------------- search
class FusionRequest(Strict):
    """A per-request fusion; omitted fields keep the repository's own (see GET /info)."""

    method: Literal["concat", "score_sum", "rrf", "mean"] | None = Field(
        None,
        description=(
            "concat / score_sum: weighted sum of member cosines (exact re-weighting of the whole index); "
            "rrf: reciprocal-rank fusion re-ranking the top max(10k, 100) summed-cosine candidates; "
            "mean: only on repositories that store the mean."
        ),
        examples=["rrf"],
    )
    weights: list[float] | None = Field(
        None,
        description="One non-negative weight per member, in member order (normalised to sum 1).",
        examples=[[1.0, 0.5]],
    )


class SearchRequest(Strict):
    """Give `query` for one query or `queries` for several (not both)."""

    query: str | None = Field(None, description="One query text.", examples=["Where is the station?"])
    queries: list[str] | None = Field(
        None, description="Several query texts, answered in order.", examples=[["Where is the station?"]]
    )
    k: int = Field(10, strict=True, description="Hits per query, from 1 to the server's max_k.", examples=[5])
    langs: list[str] | None = Field(
        None,
        description="Only return sentences in these languages (codes as indexed); omit for all.",
        examples=[["deu", "fra"]],
    )
    fusion: FusionRequest | None = Field(
        None, description="Override the repository's fusion for this request; omit to use the repository's."
    )
    rescore: Literal["none", "margin", "csls"] | None = Field(
        None,
        description=(
            "Hubness reduction: re-rank the top max(10k, 100) cosine candidates by ratio margin "
            "cos / ((r_x + r_y) / 2) or CSLS 2 cos - r_x - r_y, where r_y is a sentence's mean cosine to its "
            "4 nearest indexed sentences and r_x the query's mean top-4 cosine. Needs a cosine fusion with "
            "the repository's weights. Omit for the server's default (search_rescore)."
        ),
        examples=["margin"],
    )
    query_lang: str | None = Field(
        None,
        description=(
            "The language of every query (a code as indexed). Given, the search is language-centred: the query "
            "minus its language's mean vector is compared with each candidate minus its own language's mean "
            "(means of the indexed sentences; the index must hold at least 50 in the query language), "
            "re-ranking the top max(10k, 100) candidates. Removes the offset that tells languages apart, "
            "which translation search must ignore. Needs a cosine fusion with the repository's weights and "
            "no rescore. Omit for a plain search."
        ),
        examples=["deu"],
    )

    @model_validator(mode="after")
    def _one_of_query_or_queries(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise PydanticCustomError(
                "query_or_queries", "give exactly one of 'query' (a string) or 'queries' (a list of strings)"
            )
        return self

    def texts(self) -> tuple[list[str], str]:
        """The queries as a list, and the field name to quote in error messages."""
        if self.queries is not None:
            return self.queries, "queries"
        return [self.query or ""], "query"


class Hit(BaseModel):
    id: str = Field(description="Sentence id.", examples=["tatoeba-1234"])
    text: str = Field(description="The indexed sentence.", examples=["Wo ist der Bahnhof?"])
    lang: str = Field(description="Its language code.", examples=["deu"])
    score: float = Field(
        description=(
            "Fused cosine similarity (1.0 = same embedding); with fusion rrf, the RRF score; with rescore "
            "margin or csls, the rescored score; with query_lang, the cosine of the language-centred vectors."
        ),
        examples=[0.87],
    )
    metadata: dict[str, Any] | None = Field(None, description="Metadata stored with the sentence.")


class QueryResult(BaseModel):
    query: str = Field(description="The query these hits answer.")
    hits: list[Hit] = Field(description="Best first.")


class FusionUsed(BaseModel):
    method: str = Field(description="The fusion method that ranked the hits.", examples=["concat"])
    weights: list[float] = Field(description="Member weights used, in member order, summing to 1.")


class SearchResponse(BaseModel):
    results: list[QueryResult] = Field(description="One entry per query, in request order.")
    fusion: FusionUsed = Field(description="The fusion actually used (the repository's unless overridden).")
    rescore: str = Field(
        description="The hubness rescoring that ranked the hits: none, margin or csls.", examples=["none"]
    )
    query_lang: str | None = Field(
        None, description="The query language the hits were centred on; null for a plain search.", examples=[None]
    )
    model: str = Field(description="Name of the served model repository.", examples=["xret-ensemble"])
    took_ms: float = Field(description="Server-side time for the whole request.", examples=[4.2])


# ---------------------------------------------------------------------------------------------- embed
class EmbedRequest(Strict):
    texts: list[str] = Field(description="Texts to embed.", examples=[["Hello world", "Hallo Welt"]])


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="Unit-norm fused embeddings, in request order.")
    dim: int = Field(description="Length of each embedding.", examples=[1536])
    model: str = Field(description="Name of the served model repository.", examples=["xret-ensemble"])
    tokens: int = Field(description="Tokens in the request (first member's tokenizer).", examples=[12])


# ------------------------------------------------------------------------------- OpenAI /v1/embeddings
class OpenAIEmbeddingRequest(BaseModel):
    """The OpenAI embeddings request; unknown fields are ignored for forward compatibility."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str] = Field(
        description="A text or a list of texts (token-id arrays are not supported).",
        examples=["Hello world"],
    )
    model: str | None = Field(None, description="Must be the served model name (see /info); omitted means that one.")
    encoding_format: Literal["float", "base64"] | None = Field(
        "float",
        description=(
            "base64 = little-endian float32 bytes, base64-encoded (the openai client default); null means float, "
            "as OpenAI reads it."
        ),
    )
    dimensions: int | None = Field(
        None, strict=True, description="Optional; must equal the model's dimension (no truncation)."
    )
    user: str | None = Field(None, description="Accepted and ignored.")

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        """Name the unsupported token-array form instead of a generic union error."""
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, (int, list)) and not isinstance(v, bool) for v in items):
            raise PydanticCustomError(
                "token_arrays",
                "token arrays are not supported; send the input as a string or list of strings",
            )
        if not all(isinstance(v, str) for v in items):
            raise PydanticCustomError("input_type", "must be a string or a list of strings")
        return value


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="Position of the input this embedding belongs to.")
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32 bytes.")


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    id: str = Field(description="The served model's name (what `model` must be in /v1/embeddings).")
    object: Literal["model"] = "model"
    created: int = Field(description="When the model repository was written, Unix seconds (0 when unknown).")
    owned_by: str = "xret"


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


# ------------------------------------------------------------------------------------------ sentences
class SentenceIn(Strict):
    id: str | None = Field(None, description="Your id; a random one is assigned when omitted.", examples=["s1"])
    text: str = Field(description="The sentence to index.", examples=["Wo ist der Bahnhof?"])
    lang: str = Field(description="Language code such as 'en', 'deu' or 'zh_Hant'.", examples=["deu"])
    metadata: dict[str, Any] | None = Field(
        None, description="Any JSON object, returned with hits.", examples=[{"source": "tatoeba"}]
    )


class AddSentencesRequest(Strict):
    sentences: list[SentenceIn] = Field(description="Sentences to embed and index.")


class AddSentencesResponse(BaseModel):
    ids: list[str] = Field(description="Ids of the added sentences, in request order.")
    count: int = Field(description="How many were added.")


class DeleteSentencesRequest(Strict):
    ids: list[str] = Field(description="Ids to delete; all must exist or nothing is deleted.", examples=[["s1"]])


class SentenceOut(BaseModel):
    id: str = Field(description="Sentence id.", examples=["tatoeba-1234"])
    text: str = Field(description="The indexed sentence.", examples=["Wo ist der Bahnhof?"])
    lang: str = Field(description="Its language code.", examples=["deu"])
    metadata: dict[str, Any] | None = Field(None, description="Metadata stored with the sentence.")


class DeleteResponse(BaseModel):
    deleted: int = Field(description="How many sentences were removed.", examples=[1])


# ------------------------------------------------------------------------------------------ operations
class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool = Field(description="True once the engine serves requests.")
    status: str = Field(description="ok, degraded (cache unreachable; answers uncached) or starting.")
    cache: str = Field(description="Cache health as the cache reports it.")
    index_size: int | None = Field(None, description="Sentences in the index.")


class StatsResponse(BaseModel):
    uptime_s: float = Field(description="Seconds since the engine started.")
    index: dict[str, Any] = Field(description="Index figures (size, languages, kind, ...).")
    cache: dict[str, Any] = Field(description="Cache figures (backend, entries, ...).")


class MemberInfo(BaseModel):
    name: str
    base_model: str
    tasks: list[str]
    layer: int
    dim: int
    text_prefix: str
    runtime: dict[str, Any] = Field(description="How the member runs (provider, threads, ...).")


class InfoResponse(BaseModel):
    model: str = Field(description="Served model name; pass it as OpenAI `model`.")
    fingerprint: str = Field(description="Identifies the repository's exact content.")
    dim: int = Field(description="Fused embedding dimension.")
    fusion: dict[str, Any] = Field(description="Fusion method and weights.")
    members: list[MemberInfo]
    index_size: int
    languages: dict[str, int] = Field(description="Sentences per language in the index.")
    cache: str = Field(description="Cache backend.")
