"""The official openai client against /v1: what users of OpenAI-compatible tooling will actually run.

The client asks for base64 unless told otherwise and decodes it itself, so this exercises both
encodings end to end; max_retries=0 keeps a failure fast and visible.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import openai
import pytest

TEXTS = ["The weather is nice today.", "Das Wetter ist heute schön.", "Il fait beau aujourd'hui."]


def test_openai_client_embeddings_equal_native_embed(live: Any) -> None:
    native_body = httpx.post(f"{live.rest}/embed", json={"texts": TEXTS}, timeout=30).json()
    native = np.asarray(native_body["embeddings"], dtype=np.float32)
    client = openai.OpenAI(base_url=f"{live.rest}/v1", api_key="x", max_retries=0, timeout=30)

    default = client.embeddings.create(model=native_body["model"], input=TEXTS)  # base64 on the wire
    assert default.model == native_body["model"] and [d.index for d in default.data] == [0, 1, 2]
    np.testing.assert_array_equal(np.asarray([d.embedding for d in default.data], dtype=np.float32), native)
    assert default.usage.prompt_tokens == native_body["tokens"]

    floats = client.embeddings.create(model=native_body["model"], input=TEXTS[0], encoding_format="float")
    np.testing.assert_array_equal(np.asarray(floats.data[0].embedding, dtype=np.float32), native[0])

    # discovery as OpenAI-style tools do it: the listed model is the one embeddings accept
    assert [m.id for m in client.models.list()] == [native_body["model"]]


def test_openai_client_sees_clear_errors(live: Any) -> None:
    client = openai.OpenAI(base_url=f"{live.rest}/v1", api_key="x", max_retries=0, timeout=30)
    served = httpx.get(f"{live.rest}/info", timeout=30).json()["model"]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert served in str(unknown.value)
    with pytest.raises(openai.UnprocessableEntityError) as tokens:
        client.embeddings.create(model=served, input=[[1, 2, 3]])
    assert "token arrays are not supported" in str(tokens.value)
    with pytest.raises(openai.UnprocessableEntityError) as dims:
        client.embeddings.create(model=served, input="hi", dimensions=3)
    assert "dimensions" in str(dims.value)
