"""``nvembed:PATH`` (NV-Embed-v2 as M2D-CLAP calls it): a local remote-code folder loaded with trust_remote_code only
under this spec, offline, called through the model's own ``encode`` with an empty instruction and max length 32768.
The folder here is a tiny fake the test writes (config.json with auto_map + a modeling file), never a download."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kikimimi.checkpoints.names import text_encoder_code  # noqa: E402
from kikimimi.models.text import TextEncoderError  # noqa: E402
from kikimimi.models.text_loading import NVEMBED_MAX_LENGTH, load_text_encoder  # noqa: E402

MODELING = """
import torch
from transformers import PretrainedConfig, PreTrainedModel


class FakeNVEmbedConfig(PretrainedConfig):
    model_type = "fake_nvembed"

    def __init__(self, hidden_size=6, vocab_size=97, **kwargs):
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        super().__init__(**kwargs)


class FakeNVEmbedModel(PreTrainedModel):
    config_class = FakeNVEmbedConfig
    calls = []

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.latent = torch.nn.Linear(config.hidden_size, config.hidden_size)  # stands in for latent attention
        self.post_init()

    @torch.no_grad()
    def encode(self, prompts, instruction="", max_length=4096, **kwargs):
        type(self).calls.append((list(prompts), instruction, max_length))
        out = []
        for text in prompts:
            ids = torch.tensor([ord(c) % self.config.vocab_size for c in (instruction + text)[:max_length]] + [2])
            out.append(self.latent(self.embed(ids)).mean(0))  # EOS added, pooled over the tokens
        return torch.stack(out)
"""


def _fake_folder(tmp_path, monkeypatch):
    folder = tmp_path / "nv-embed"
    folder.mkdir()
    (folder / "modeling_fake.py").write_text(MODELING)
    spec = importlib.util.spec_from_file_location("fake_nvembed_build", folder / "modeling_fake.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    module.FakeNVEmbedModel(module.FakeNVEmbedConfig()).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "modeling_fake.FakeNVEmbedConfig",
        "AutoModel": "modeling_fake.FakeNVEmbedModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    # the folder's code is copied into a modules cache: keep it in tmp_path, not the user's home
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder, module


def test_nvembed_spec_uses_the_models_own_encode(tmp_path, monkeypatch) -> None:
    folder, module = _fake_folder(tmp_path, monkeypatch)
    encoder = load_text_encoder(f"nvembed:{folder}")
    assert encoder.name == f"nvembed:{folder.resolve()}" and encoder.dim == 6
    emb = encoder.encode(["a dog barks", "rain"], batch_size=8)
    assert emb.shape == (2, 6) and emb.dtype == torch.float32
    calls = type(encoder.model).calls
    assert calls[-1][1:] == ("", NVEMBED_MAX_LENGTH) == ("", 32768)  # empty instruction, M2D-CLAP's length
    # the same numbers as the model's own encode (nothing pooled or normalised by kikimimi)
    ref = module.FakeNVEmbedModel.from_pretrained(folder)
    torch.testing.assert_close(emb, ref.encode(["a dog barks", "rain"]))
    assert text_encoder_code(f"nvembed:{folder}") == "N"
    sys.modules.pop("fake_nvembed_build", None)


def test_only_nvembed_trusts_remote_code_and_errors_name_the_folder(tmp_path, monkeypatch) -> None:
    folder, _ = _fake_folder(tmp_path, monkeypatch)
    seen = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModel, transformers.AutoModelForCausalLM):
        real = cls.from_pretrained

        def spy(*args, _real=real, **kwargs):
            seen.append(kwargs)
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    with pytest.raises(TextEncoderError, match="cannot load a Hugging Face model offline"):
        load_text_encoder(f"llm:{folder}")  # another spec never runs the folder's code
    assert seen and not any(kw.get("trust_remote_code") for kw in seen)
    load_text_encoder(f"nvembed:{folder}")
    assert seen[-1]["trust_remote_code"] is True and seen[-1]["local_files_only"] is True
    with pytest.raises(TextEncoderError, match="does not exist"):
        load_text_encoder(f"nvembed:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderError, match=r"empty': cannot load NV-Embed-v2 offline"):
        load_text_encoder(f"nvembed:{tmp_path / 'empty'}")
