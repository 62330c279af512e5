"""The spec's API security settings: api_keys_file, rate_limit, max_n; their validation errors; their way to
the ingress (serving_args); and that no key ever shows in errors, rendered files or CLI output."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsserve.app import serving_args
from dsserve.cli import main
from dsserve.config import RateLimitSpec, load_spec, parse_spec
from dsserve.errors import SpecError, StackError
from dsserve.render.serve_config import render_serve_config
from dsserve.stack import client_api_key
from tests.conftest import REPO

KEY = "sk-live-9f8e7d6c5b4a"  # what must never be printed


def _api(data: dict, **api: Any) -> dict:
    out = copy.deepcopy(data)
    out["api"].update(api)
    return out


def _error(data: dict) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, where="p.yaml")
    return str(info.value)


def test_defaults_and_a_full_section(local_cpu_data: dict) -> None:
    spec = parse_spec(local_cpu_data)
    assert spec.api.api_keys_file is None and spec.api.rate_limit is None and spec.api.max_n == 16
    spec = parse_spec(
        _api(
            local_cpu_data,
            api_keys_file="/etc/dsserve/keys",
            max_n=4,
            rate_limit={"requests_per_second": 0.5, "burst": 3},
        )
    )
    assert spec.api.rate_limit == RateLimitSpec(requests_per_second=0.5, burst=3)
    assert spec.api.api_keys_file == "/etc/dsserve/keys" and spec.api.max_n == 4


@pytest.mark.parametrize(
    "api,fragments",
    [
        (
            {"rate_limit": {"requests_per_second": 5, "burst": 10}},
            ["api.rate_limit", "per API key", "api.api_keys_env or api.api_keys_file"],
        ),
        (
            {"api_keys_env": "K", "rate_limit": {"requests_per_second": 0, "burst": 1}},
            ["api.rate_limit.requests_per_second", "got 0", "greater than 0"],
        ),
        (
            {"api_keys_env": "K", "rate_limit": {"requests_per_second": 1, "burst": 0}},
            ["api.rate_limit.burst", "got 0", "greater than or equal to 1"],
        ),
        (
            {"api_keys_env": "K", "rate_limit": {"requests_per_second": 1}},
            ["api.rate_limit.burst", "required but missing"],
        ),
        ({"api_keys_env": "K", "rate_limit": {"rps": 1, "burst": 1}}, ["api.rate_limit.rps", "unknown key"]),
        ({"api_keys_file": "keys.txt"}, ["api.api_keys_file", "absolute file path"]),
        ({"max_n": 0}, ["api.max_n", "got 0"]),
        ({"max_n": 100_000}, ["api.max_n", "less than or equal to 16384"]),
        ({"max_n": 8, "max_prompts": 9}, ["api.max_prompts", "got 9", "at most 8", "or raise api.max_n"]),
        ({"max_tokens": 0}, ["api.max_tokens", "got 0"]),
        ({"http_request_timeout_s": 0}, ["api.http_request_timeout_s", "got 0"]),
        ({"client_timeout_s": 1}, ["api.client_timeout_s", "got 1"]),
    ],
    ids=[
        "limit-needs-keys",
        "zero-rate",
        "zero-burst",
        "missing-burst",
        "unknown-key",
        "relative-file",
        "max-n-zero",
        "max-n-huge",
        "prompts-over-sequences",
        "max-tokens-zero",
        "header-timeout-zero",
        "client-timeout-tiny",
    ],
)
def test_bad_settings_name_path_and_fix(local_cpu_data: dict, api: dict, fragments: list[str]) -> None:
    message = _error(_api(local_cpu_data, **api))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(
    "api",
    [
        {"api_keys_env": KEY},
        {"api_keys_file": KEY},
        {"api_keys_env": [KEY]},
        {"api_keys_file": {"k": KEY}},
        {"api_keys_env": 123456789},
        {"api_keys_file": f"relative/{KEY}"},
    ],
    ids=["key-as-env-name", "key-as-file", "env-list", "file-mapping", "env-number", "relative-path"],
)
def test_a_key_pasted_into_the_spec_is_never_echoed(local_cpu_data: dict, api: dict) -> None:
    message = _error(_api(local_cpu_data, **api))
    assert "api.api_keys_" in message and "not shown" in message, message
    assert KEY not in message and "123456789" not in message, message


def test_cli_validate_and_set_do_not_echo_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof = tmp_path / "p.yaml"
    data = yaml.safe_load((REPO / "deploy/profiles/local-cpu.yaml").read_text())
    data["api"]["api_keys_env"] = KEY
    prof.write_text(yaml.safe_dump(data))
    assert main(["validate", str(prof)]) == 2
    data["api"].update(api_keys_env=None, api_keys_file=KEY)
    prof.write_text(yaml.safe_dump(data))
    assert main(["render", "serve-config", str(prof)]) == 2
    out = capsys.readouterr()
    assert KEY not in out.out + out.err
    assert "api.api_keys_env" in out.out + out.err and "api.api_keys_file" in out.out + out.err


def _pipeline_kwargs(args: dict) -> dict:
    """Where the pipeline's settings ride: the engine replica's LLM config (direct) or the ingress's kwargs."""
    if "llm_config" in args and "ingress_cls_config" not in args:
        return args["llm_config"]["experimental_configs"]["dsserve_api"]
    return args["ingress_cls_config"]["ingress_extra_kwargs"]


@pytest.mark.parametrize("gateway", ["direct", "ingress"])
def test_serving_args_pass_the_settings_to_the_pipeline(local_cpu_data: dict, gateway: str) -> None:
    local_cpu_data["serving"]["gateway"] = gateway
    spec = parse_spec(
        _api(
            local_cpu_data,
            api_keys_env="DSSERVE_API_KEYS",
            api_keys_file="/etc/k/keys",
            max_n=8,
            rate_limit={"requests_per_second": 2.5, "burst": 5},
        )
    )
    kwargs = _pipeline_kwargs(serving_args(spec))
    assert kwargs["api_keys_env"] == "DSSERVE_API_KEYS" and kwargs["api_keys_file"] == "/etc/k/keys"
    assert kwargs["rate_limit"] == {"requests_per_second": 2.5, "burst": 5} and kwargs["max_n"] == 8
    plain = _pipeline_kwargs(serving_args(parse_spec(local_cpu_data)))
    assert plain["api_keys_file"] is None and plain["rate_limit"] is None and plain["max_n"] == 16


def test_the_pipeline_accepts_exactly_those_settings(local_cpu_data: dict) -> None:
    from dsserve.serving.pipeline import PipelineSettings

    for gateway in ("direct", "ingress"):
        local_cpu_data["serving"]["gateway"] = gateway
        kwargs = _pipeline_kwargs(serving_args(parse_spec(local_cpu_data)))
        assert PipelineSettings(**kwargs).max_n == 16  # no unknown names (a TypeError otherwise)


def test_rendered_config_names_sources_never_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# prod\n{KEY}\n")
    monkeypatch.setenv("DSSERVE_API_KEYS", KEY)
    spec = load_spec(
        REPO / "deploy/profiles/local-cpu.yaml",
        [
            "api.api_keys_env=DSSERVE_API_KEYS",
            f"api.api_keys_file={keys}",
            "api.rate_limit={requests_per_second: 1, burst: 2}",
        ],
    )
    text = render_serve_config(spec, source="x")
    assert KEY not in text
    assert "$DSSERVE_API_KEYS" in text and f"API keys are read from {keys}" in text
    assert _pipeline_kwargs(yaml.safe_load(text)["applications"][0]["args"])["rate_limit"] == {
        "requests_per_second": 1.0,
        "burst": 2,
    }


def test_client_key_for_dsserve_up_comes_from_the_file_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_cpu_data: dict
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# comment\n\n{KEY}\nsecond\n")
    monkeypatch.delenv("NO_SUCH_KEYS", raising=False)
    assert client_api_key(parse_spec(_api(local_cpu_data, api_keys_file=str(keys)))) == KEY
    monkeypatch.setenv("ENV_KEYS", "env-first")
    both = parse_spec(_api(local_cpu_data, api_keys_env="ENV_KEYS", api_keys_file=str(keys)))
    assert client_api_key(both) == "env-first"
    keys.write_text("# all revoked\n")
    with pytest.raises(StackError, match="holds no keys"):
        client_api_key(parse_spec(_api(local_cpu_data, api_keys_file=str(keys))))
    with pytest.raises(StackError, match="cannot be read") as err:
        client_api_key(parse_spec(_api(local_cpu_data, api_keys_file=str(tmp_path / "missing"))))
    assert KEY not in str(err.value)


def test_sequence_and_token_caps_reach_the_pipeline_and_vllm(local_cpu_data: dict) -> None:
    """The pipeline refuses past the caps; vLLM's own caps match them (prompts per request, default max_tokens)."""
    from dsserve.app import llm_config, pipeline_settings

    spec = parse_spec(_api(local_cpu_data, max_n=8, max_tokens=300))
    settings = pipeline_settings(spec)
    assert settings["max_n"] == 8 and settings["max_prompts"] == 8, "max_prompts defaults to max_n"
    assert settings["max_tokens"] == 300 and settings["max_messages"] == 2048
    cfg = llm_config(spec)
    assert cfg["runtime_env"]["env_vars"]["VLLM_MAX_COMPLETION_PROMPTS"] == "8"
    assert cfg["engine_kwargs"]["override_generation_config"] == {"max_new_tokens": 300}
    unbounded = llm_config(parse_spec(_api(local_cpu_data, max_tokens=None)))
    assert "override_generation_config" not in unbounded["engine_kwargs"]


def test_a_model_id_with_a_colon_is_refused_with_the_fix(local_cpu_data: dict) -> None:
    data = {**local_cpu_data, "model": {**local_cpu_data["model"], "id": "deepseek:v3"}}
    message = _error(data)
    assert "model.id" in message and "LoRA adapter" in message and "deepseek-v3" in message
