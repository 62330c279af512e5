"""Model and adapter sources are parsed once, in the spec, and resolve to directories."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dsserve.config import parse_spec
from dsserve.errors import ModelBuildError, SpecError
from dsserve.model_source import AdapterSource, ModelSource, UnknownRecipeError
from dsserve.tiny_lora import tiny_lora_path
from tests.conftest import REPO

# --- ModelSource / AdapterSource parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "local"),
    [
        ("tiny:tiny-deepseek-v2", "tiny", True),
        ("/models/deepseek-v3", "path", True),
        ("./models/x", "path", True),
        ("../x", "path", True),
        ("~/models/x", "path", True),
        ("deepseek-ai/DeepSeek-V3", "hub", False),
        ("tiny-lora:tiny-deepseek-llm-sql", "hub", False),  # an adapter recipe is no model source
    ],
)
def test_model_source_kinds(text: str, kind: str, local: bool) -> None:
    source = ModelSource.parse(text)
    assert (source.kind, source.is_local, source.is_tiny, str(source)) == (kind, local, kind == "tiny", text)


def test_tiny_model_source_names_its_recipe() -> None:
    assert ModelSource.parse("tiny:tiny-deepseek-llm").recipe == "tiny-deepseek-llm"
    with pytest.raises(ValueError, match="is a path source, not a tiny one"):
        _ = ModelSource.parse("/models/x").recipe


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiny:tiny-deepseek-v9", "unknown tiny model 'tiny-deepseek-v9'; did you mean 'tiny-deepseek-v2'? choose one"),
        ("tiny:", "unknown tiny model ''; choose one of: tiny-deepseek-llm, tiny-deepseek-v2"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
    ],
)
def test_bad_model_source(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ModelSource.parse(text)
    assert str(info.value).startswith(message)


def test_unknown_recipe_error_carries_the_choices() -> None:
    with pytest.raises(UnknownRecipeError) as info:
        ModelSource.parse("tiny:nope")
    assert (info.value.name, info.value.known) == ("nope", ["tiny-deepseek-llm", "tiny-deepseek-v2"])


@pytest.mark.parametrize(
    ("text", "kind"),
    [("tiny-lora:tiny-deepseek-llm-sql", "tiny-lora"), ("/srv/loras/sql", "path"), ("~/loras/sql", "path")],
)
def test_adapter_source_kinds(text: str, kind: str) -> None:
    source = AdapterSource.parse(text)
    assert (source.kind, source.is_tiny, str(source)) == (kind, kind == "tiny-lora", text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiny-lora:tiny-deepseek-llm-sq", "unknown tiny LoRA adapter 'tiny-deepseek-llm-sq'; did you mean"),
        ("adapters/sql", "must be an absolute path (or tiny-lora:<recipe>)"),
        ("tiny:tiny-deepseek-llm", "must be an absolute path (or tiny-lora:<recipe>)"),  # a model, not an adapter
        (" ", "set it to an adapter directory or tiny-lora:<recipe>"),
    ],
)
def test_bad_adapter_source(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        AdapterSource.parse(text)
    assert str(info.value).startswith(message)


def test_the_spec_parses_sources_once_and_writes_them_back_as_written() -> None:
    data = yaml.safe_load((REPO / "deploy/profiles/local-cpu-lora.yaml").read_text())
    spec = parse_spec(data)
    assert isinstance(spec.model.source, ModelSource) and spec.model.source.recipe == "tiny-deepseek-llm"
    assert spec.model.lora is not None
    assert all(isinstance(s, AdapterSource) for s in spec.model.lora.adapters.values())
    dumped = spec.model_dump(mode="json")
    assert dumped["model"]["source"] == data["model"]["source"]
    assert dumped["model"]["lora"]["adapters"] == data["model"]["lora"]["adapters"]
    assert parse_spec(spec.model_dump()) == spec  # a parsed source validates again as itself


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "model.source",
            "tiny:tiny-deepseek-v9",
            "spec: model.source: got 'tiny:tiny-deepseek-v9'; unknown tiny model",
        ),
        ("model.source", 7, "spec: model.source: got 7; must be a string"),
        ("model.source", "", "spec: model.source: got ''; must not be empty"),
    ],
)
def test_spec_reports_a_bad_source_at_its_path(local_cpu_data: dict, path: str, value: object, expected: str) -> None:
    local_cpu_data["model"]["source"] = value
    with pytest.raises(SpecError) as info:
        parse_spec(local_cpu_data)
    assert str(info.value).startswith(expected)


def test_path_and_hub_sources_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ModelSource.parse("~/models/x").resolve() == tmp_path / "models/x"
    assert AdapterSource.parse("/srv/loras/sql").resolve() == Path("/srv/loras/sql")
    hub = ModelSource.parse("deepseek-ai/DeepSeek-V3")
    assert hub.engine_model() == "deepseek-ai/DeepSeek-V3"
    with pytest.raises(ModelBuildError, match="is a Hugging Face repo id, not a directory"):
        hub.resolve()


def test_tiny_adapter_source_resolves_to_its_build(tmp_path: Path) -> None:
    source = AdapterSource.parse("tiny-lora:tiny-deepseek-llm-sql")
    path, built = source.build(tmp_path)
    assert built and path == tiny_lora_path("tiny-deepseek-llm-sql", tmp_path)
    assert (path / "adapter_config.json").is_file()
    assert source.resolve(tmp_path) == path and source.build(tmp_path) == (path, False)


def test_a_replica_on_another_disk_builds_its_own_tiny_model(tmp_path) -> None:
    """The builder resolves tiny: on the head; a replica whose node lacks that directory (another pod) gets
    its own deterministic copy, and the engine's LLMConfig points at it. Found by the KubeRay emulation
    (tests/images): vLLM took the head's path for a hub id."""
    from ray.serve.llm import LLMConfig

    from dsserve.app import _resolve_tiny_sources
    from dsserve.model_source import TINY_SOURCE_KEY
    from dsserve.serving.server import ensure_local_model

    cfg = {"model_loading_config": {"model_id": "tiny", "model_source": "tiny:tiny-deepseek-v2"}}
    _resolve_tiny_sources([cfg])
    here = cfg["model_loading_config"]["model_source"]
    assert cfg["experimental_configs"][TINY_SOURCE_KEY] == "tiny:tiny-deepseek-v2"
    # the path as the head wrote it, on a node where it does not exist
    cfg["model_loading_config"]["model_source"] = str(tmp_path / "head-only" / "tiny-deepseek-v2")
    llm_config = LLMConfig(**cfg)
    assert ensure_local_model(llm_config) is True
    assert llm_config.model_loading_config.model_source == here
    assert ensure_local_model(llm_config) is False  # present now: nothing to do
    plain = LLMConfig(model_loading_config={"model_id": "m", "model_source": str(tmp_path / "elsewhere")})
    assert ensure_local_model(plain) is False  # not a tiny model: left to the engine
