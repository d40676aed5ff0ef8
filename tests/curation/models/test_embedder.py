"""load_embedder on damaged or foreign checkpoint files: one typed, one-line error naming the file
and the problem (the CLI prints ConfigErrors as one line), never torch.load's traceback."""

import io
import pickle
import zipfile
from collections import OrderedDict
from fractions import Fraction

import pytest
import torch

from curation.config import ConfigError
from curation.models.embedder import CheckpointError, EmbedderError, load_embedder
from curation.models.sscd import SSCDModel


def small_state() -> "OrderedDict[str, torch.Tensor]":
    torch.manual_seed(0)
    return SSCDModel("resnet18", dim=8, width=8).state_dict()


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def renamed(state, old: str, new: str):
    return {(new if k == old else k): v for k, v in state.items()}


def reshaped(state, key: str):
    return {k: (torch.zeros(3, 3) if k == key else v) for k, v in state.items()}


def torchscript_lookalike() -> bytes:
    """A zip with TorchScript's member names but no valid contents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/constants.pkl", b"garbage")
        archive.writestr("model/code/__torch__.py", b"garbage")
        archive.writestr("model/data.pkl", b"garbage")
    return buffer.getvalue()


def descriptor_payload(**changes) -> dict:
    payload = {
        "format": "lvd.descriptor",
        "version": 1,
        "arch": "resnet18",
        "dim": 8,
        "arch_kwargs": {"width": 8},
        "inference": {"size": 32, "resize": "square"},
        "train": {},
        "model": dict(small_state()),
    }
    payload.update(changes)
    return payload


GOOD_BYTES = torch_bytes(small_state())

CASES = {
    # name: (file contents, model name, words the message must contain)
    "random_bytes": (bytes(range(256)) * 40, "sscd_resnet18", "not a readable torch checkpoint"),
    "empty_file": (b"", "sscd_resnet18", "empty"),
    "truncated_torch_file": (GOOD_BYTES[: len(GOOD_BYTES) // 2], "sscd_resnet18", "corrupt"),
    "truncated_to_a_few_bytes": (GOOD_BYTES[:10], "sscd_resnet50", "not a readable"),
    "python_object_pickle": (
        pickle.dumps(Fraction(1, 3), protocol=2),
        "sscd_resnet18",
        "not a readable",
    ),
    "tensor_not_a_dict": (torch_bytes(torch.zeros(3)), "sscd_resnet18", "holds a Tensor"),
    "list_not_a_dict": (torch_bytes([1, 2, 3]), "sscd_resnet18", "holds a list"),
    "training_state_without_weights": (
        torch_bytes({"epoch": 3, "lr": 0.1}),
        "sscd_resnet18",
        "conv1.weight",
    ),
    "state_dict_entry_not_a_dict": (
        torch_bytes({"state_dict": [1, 2]}),
        "sscd_resnet18",
        "'state_dict' holds a list",
    ),
    "integer_keys": (torch_bytes({0: torch.zeros(1)}), "sscd_resnet18", "not a state dict"),
    "vit_keys_for_sscd": (
        torch_bytes({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}),
        "sscd_resnet18",
        "conv1.weight",
    ),
    "one_key_renamed": (
        torch_bytes(
            renamed(small_state(), "backbone.layer1.0.bn1.bias", "backbone.layer1.0.bn1.beta")
        ),
        "sscd_resnet18",
        "missing 1 key(s), e.g. ['backbone.layer1.0.bn1.bias']; unexpected 1 key(s)",
    ),
    "wrong_tensor_shape": (
        torch_bytes(reshaped(small_state(), "backbone.layer2.0.conv2.weight")),
        "sscd_resnet18",
        "wrong shape for 1 key(s), e.g. ['backbone.layer2.0.conv2.weight']",
    ),
    "missing_a_block": (
        torch_bytes(
            {k: v for k, v in small_state().items() if not k.startswith("backbone.layer3.1.")}
        ),
        "sscd_resnet18",
        "unknown ResNet layout",
    ),
    "damaged_torchscript_archive": (torchscript_lookalike(), "torchscript", "TorchScript"),
    "descriptor_weights_missing": (
        torch_bytes(descriptor_payload(model={})),
        "descriptor",
        "Missing key(s) in state_dict",
    ),
    "descriptor_future_version": (
        torch_bytes(descriptor_payload(version=99)),
        "descriptor",
        "version 99",
    ),
    "random_bytes_for_a_vit": (bytes(range(256)) * 40, "vit_small", "UnpicklingError"),
    "sscd_weights_for_a_vit": (GOOD_BYTES, "vit_small", "not a vit_small backbone checkpoint"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_checkpoint_raises_one_line_checkpoint_error(case, tmp_path):
    data, model, words = CASES[case]
    path = tmp_path / f"{case}.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_embedder(model, path, size=32)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {path}: ")
    assert words in message
    assert len(message) - len(str(path)) < 400  # short enough to read in a terminal


def test_checkpoint_error_is_a_config_error_so_the_cli_prints_one_line():
    assert issubclass(CheckpointError, EmbedderError)
    assert issubclass(CheckpointError, ConfigError)
    assert issubclass(CheckpointError, ValueError)


def test_a_good_state_dict_still_loads(tmp_path):
    path = tmp_path / "good.pt"
    path.write_bytes(GOOD_BYTES)
    embedder = load_embedder("sscd_resnet18", path, size=32)
    assert embedder.dim == 8
    for key, value in small_state().items():
        assert torch.equal(embedder.model.state_dict()[key], value), key
