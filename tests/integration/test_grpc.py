"""xret.v1.Retrieval over a real gRPC channel to the real server (tiny repository, fresh index)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import descriptor_pool, json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client.parser import text_string_to_metric_families

from service.grpc.stubs import xret_pb2, xret_pb2_grpc

if TYPE_CHECKING:  # tests/integration is not a package; only mypy needs the type
    from tests.integration.conftest import RunningService

SENTENCES = [
    ("en-1", "The train to the airport leaves at nine.", "en", {"source": "test", "n": 3}),
    ("de-1", "Der Zug zum Flughafen fährt um neun.", "de", None),
    ("fr-1", "Le chat dort sur le canapé rouge.", "fr", {"tags": ["animal", "home"]}),
    ("de-2", "Morgen regnet es in den Bergen.", "de", None),
]


@contextmanager
def stub_for(svc: RunningService) -> Iterator[xret_pb2_grpc.RetrievalStub]:
    with grpc.insecure_channel(svc.grpc) as channel:
        yield xret_pb2_grpc.RetrievalStub(channel)


def sentence(id_: str, text: str, lang: str, metadata: dict[str, Any] | None = None) -> xret_pb2.SentenceInput:
    struct = None
    if metadata is not None:
        struct = struct_pb2.Struct()
        struct.update(metadata)
    return xret_pb2.SentenceInput(id=id_, text=text, lang=lang, metadata=struct)


def add_all(stub: xret_pb2_grpc.RetrievalStub, **kwargs: Any) -> list[str]:
    request = xret_pb2.AddSentencesRequest(sentences=[sentence(*row) for row in SENTENCES])
    return list(stub.AddSentences(request, timeout=30, **kwargs).ids)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_added_sentences_find_themselves_and_language_filters_apply(live: RunningService) -> None:
    with stub_for(live) as stub:
        assert add_all(stub) == [row[0] for row in SENTENCES]
        texts = [row[1] for row in SENTENCES]
        response = stub.Search(xret_pb2.SearchRequest(queries=texts, k=3), timeout=30)

        assert [r.query for r in response.results] == texts
        assert response.model and response.took_ms > 0
        for (id_, text, lang, _), result in zip(SENTENCES, response.results, strict=True):
            top = result.hits[0]
            assert (top.id, top.text, top.lang) == (id_, text, lang)
            assert top.score == pytest.approx(1.0, abs=1e-4)
            assert len(result.hits) == 3
            assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
        first = response.results[0].hits[0]
        assert json_format.MessageToDict(first.metadata) == {"source": "test", "n": 3.0}
        assert not response.results[1].hits[0].HasField("metadata")

        german = stub.Search(xret_pb2.SearchRequest(queries=[texts[0]], k=10, langs=["de"]), timeout=30)
        assert {h.lang for h in german.results[0].hits} == {"de"}
        assert {h.id for h in german.results[0].hits} == {"de-1", "de-2"}


def test_assigned_ids_and_embeddings_match_rest(live: RunningService) -> None:
    texts = ["Where is the station?", "Wo ist der Bahnhof?", "Where is the station?"]
    with stub_for(live) as stub:
        ids = stub.AddSentences(
            xret_pb2.AddSentencesRequest(sentences=[sentence("", "An id is assigned here.", "en")]),
            timeout=30,
        ).ids
        assert len(ids) == 1 and ids[0]

        info = stub.Info(xret_pb2.InfoRequest(), timeout=30)
        response = stub.Embed(xret_pb2.EmbedRequest(texts=texts), timeout=30)
    vectors = np.array([e.values for e in response.embeddings], dtype=np.float32)

    assert response.dim == info.dim == vectors.shape[1] and vectors.shape[0] == 3
    assert response.model == info.model and response.tokens > 0
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert float(vectors[0] @ vectors[1]) < 0.9999  # different texts, different vectors

    rest = httpx.post(f"{live.rest}/embed", json={"texts": texts}, timeout=30)
    assert rest.status_code == 200, rest.text
    body = rest.json()
    assert (body["dim"], body["model"], body["tokens"]) == (response.dim, response.model, response.tokens)
    # JSON floats round-trip float32 exactly, so both transports must carry the very same vectors.
    np.testing.assert_array_equal(np.array(body["embeddings"], dtype=np.float32), vectors)


def test_delete_then_second_delete_is_not_found(live: RunningService) -> None:
    with stub_for(live) as stub:
        add_all(stub)
        assert stub.DeleteSentences(xret_pb2.DeleteSentencesRequest(ids=["fr-1"]), timeout=30).deleted == 1
        error = rpc_error(lambda: stub.DeleteSentences(xret_pb2.DeleteSentencesRequest(ids=["fr-1"]), timeout=30))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "fr-1" in error.details()
        # All or nothing: a known id next to an unknown one is not deleted either.
        both = xret_pb2.DeleteSentencesRequest(ids=["en-1", "nope"])
        assert rpc_error(lambda: stub.DeleteSentences(both, timeout=30)).code() == grpc.StatusCode.NOT_FOUND
        hits = stub.Search(xret_pb2.SearchRequest(queries=[SENTENCES[2][1]], k=10), timeout=30).results[0].hits
        assert {h.id for h in hits} == {"en-1", "de-1", "de-2"}


def test_get_sentence_reads_back_what_was_added_then_not_found(live: RunningService) -> None:
    with stub_for(live) as stub:
        stub.AddSentences(
            xret_pb2.AddSentencesRequest(
                sentences=[sentence("m-1", "Metadata rides along.", "en", {"year": 2020, "tags": ["a"]})]
            ),
            timeout=30,
        )
        got = stub.GetSentence(xret_pb2.GetSentenceRequest(id="m-1"), timeout=30)
        assert (got.id, got.text, got.lang) == ("m-1", "Metadata rides along.", "en")
        assert json_format.MessageToDict(got.metadata) == {"year": 2020, "tags": ["a"]}
        stub.DeleteSentences(xret_pb2.DeleteSentencesRequest(ids=["m-1"]), timeout=30)
        error = rpc_error(lambda: stub.GetSentence(xret_pb2.GetSentenceRequest(id="m-1"), timeout=30))
        assert error.code() == grpc.StatusCode.NOT_FOUND and "unknown sentence id 'm-1'" in error.details()


def test_info_describes_the_ensemble_and_the_index(live: RunningService) -> None:
    with stub_for(live) as stub:
        add_all(stub)
        info = stub.Info(xret_pb2.InfoRequest(), timeout=30)
    assert info.model == live.settings.repo.resolve().name
    assert len(info.fingerprint) >= 16
    assert info.dim == 64 and info.fusion_method == "concat"
    assert [m.name for m in info.members] == ["tiny0", "tiny1"]
    assert sum(m.dim for m in info.members) == info.dim
    assert [m.layer for m in info.members] == [1, 2]
    assert all(m.base_model for m in info.members)
    assert info.index_size == 4
    assert dict(info.languages) == {"en": 1, "de": 2, "fr": 1}
    assert info.cache


def test_health_and_reflection(live: RunningService) -> None:
    with grpc.insecure_channel(live.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "xret.v1.Retrieval"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        unknown = rpc_error(lambda: health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10))
        assert unknown.code() == grpc.StatusCode.NOT_FOUND

        database = ProtoReflectionDescriptorDatabase(channel)
        assert "xret.v1.Retrieval" in set(database.get_services())
        assert "grpc.health.v1.Health" in set(database.get_services())
        # The descriptors a tool like grpcurl builds from reflection alone (Struct dependency included).
        pool = descriptor_pool.DescriptorPool(database)
        retrieval = pool.FindServiceByName("xret.v1.Retrieval")
        assert sorted(m.name for m in retrieval.methods) == [
            "AddSentences",
            "DeleteSentences",
            "Embed",
            "GetSentence",
            "Info",
            "Search",
        ]
        search = retrieval.FindMethodByName("Search")
        assert search.output_type.full_name == "xret.v1.SearchResponse"
        hit = pool.FindMessageTypeByName("xret.v1.Hit")
        metadata_type = hit.fields_by_name["metadata"].message_type
        assert metadata_type is not None and metadata_type.full_name == "google.protobuf.Struct"


def test_bad_input_is_invalid_argument_naming_the_problem(service_factory: Callable[..., Any]) -> None:
    with service_factory(max_texts_per_request=3) as svc, stub_for(svc) as stub:
        added = stub.AddSentences(
            xret_pb2.AddSentencesRequest(sentences=[sentence("a", "A sentence.", "en")]), timeout=30
        )
        assert list(added.ids) == ["a"]
        cases: list[tuple[Callable[[], Any], str]] = [
            (
                lambda: stub.Embed(xret_pb2.EmbedRequest(texts=["ok", "  "]), timeout=30),
                "texts[1]: text is empty",
            ),
            (lambda: stub.Embed(xret_pb2.EmbedRequest(texts=[]), timeout=30), "at least one text"),
            (lambda: stub.Search(xret_pb2.SearchRequest(queries=["hi"], k=0), timeout=30), "k must be"),
            (
                lambda: stub.Search(xret_pb2.SearchRequest(queries=["hi"], k=1, langs=["xx"]), timeout=30),
                "'xx'",
            ),
            (
                lambda: stub.Embed(xret_pb2.EmbedRequest(texts=["a", "b", "c", "d"]), timeout=30),
                "max_texts_per_request=3",
            ),
            (
                lambda: stub.AddSentences(
                    xret_pb2.AddSentencesRequest(sentences=[sentence("b", "Fine text.", "not a lang")]),
                    timeout=30,
                ),
                "sentences[0].lang",
            ),
            (  # a Struct number may be NaN or infinite; JSON cannot hold it (was INTERNAL until stop 16)
                lambda: stub.AddSentences(
                    xret_pb2.AddSentencesRequest(
                        sentences=[sentence("c", "Fine.", "en"), sentence("d", "Also fine.", "en", {"x": float("inf")})]
                    ),
                    timeout=30,
                ),
                "sentences[1].metadata: not representable as JSON",
            ),
        ]
        for call, expected in cases:
            error = rpc_error(call)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (expected, error.details())
            assert expected in error.details()
            kinds = [v for k, v in error.trailing_metadata() if k == "xret-error-kind"]
            assert kinds and kinds[0] in {"invalid_input", "too_large"}
        # a refused request adds nothing, not even its valid sentences
        gone = rpc_error(lambda: stub.DeleteSentences(xret_pb2.DeleteSentencesRequest(ids=["c"]), timeout=30))
        assert gone.code() == grpc.StatusCode.NOT_FOUND


def test_malformed_protobuf_bytes_are_invalid_argument(live: RunningService) -> None:
    with grpc.insecure_channel(live.grpc) as channel:
        raw = channel.unary_unary("/xret.v1.Retrieval/Embed")  # bytes in, bytes out: no serializers
        error = rpc_error(lambda: raw(b"\xff\xff\xff", timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid xret.v1.EmbedRequest message" in error.details()
        # The same raw path works with well-formed bytes, so the failure above is about the bytes.
        good = raw(xret_pb2.EmbedRequest(texts=["hello"]).SerializeToString(), timeout=30)
        assert len(xret_pb2.EmbedResponse.FromString(good).embeddings) == 1


def test_api_key_guards_index_changes_only(service_factory: Callable[..., Any]) -> None:
    one = xret_pb2.AddSentencesRequest(sentences=[sentence("k1", "Keys keep writers honest.", "en")])
    with service_factory(api_key="s3cret") as svc, stub_for(svc) as stub:
        missing = rpc_error(lambda: stub.AddSentences(one, timeout=30))
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED and "API key" in missing.details()
        wrong = rpc_error(lambda: stub.AddSentences(one, timeout=30, metadata=[("x-api-key", "nope")]))
        assert wrong.code() == grpc.StatusCode.PERMISSION_DENIED
        not_bearer = rpc_error(lambda: stub.AddSentences(one, timeout=30, metadata=[("authorization", "s3cret")]))
        assert not_bearer.code() == grpc.StatusCode.UNAUTHENTICATED
        delete = xret_pb2.DeleteSentencesRequest(ids=["k1"])
        assert rpc_error(lambda: stub.DeleteSentences(delete, timeout=30)).code() == grpc.StatusCode.UNAUTHENTICATED

        assert list(stub.AddSentences(one, timeout=30, metadata=[("authorization", "Bearer s3cret")]).ids) == ["k1"]
        hits = stub.Search(xret_pb2.SearchRequest(queries=["Keys"], k=1), timeout=30).results[0].hits
        assert [h.id for h in hits] == ["k1"]  # reading needs no key
        assert stub.DeleteSentences(delete, timeout=30, metadata=[("x-api-key", "s3cret")]).deleted == 1


def test_overload_is_resource_exhausted_and_counted(service_factory: Callable[..., Any]) -> None:
    with service_factory(queue_size=1, max_wait_ms=50) as svc, stub_for(svc) as stub:
        futures = [
            stub.Embed.future(xret_pb2.EmbedRequest(texts=[f"overload text number {i}"]), timeout=60) for i in range(40)
        ]
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert "queue" in error.details().lower()
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}

        exposition = httpx.get(f"{svc.rest}/metrics", timeout=30).text
        counted = {
            sample.labels["outcome"]: sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
            if sample.name == "xret_requests_total"
            and sample.labels.get("transport") == "grpc"
            and sample.labels.get("method") == "Embed"
        }
        assert counted == {
            "ok": codes.count(grpc.StatusCode.OK),
            "overloaded": codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED),
        }
