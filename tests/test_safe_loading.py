"""Weights never run code, and bad configs fail before anything is built.

Every loading path of the library gets a crafted file whose unpickling would create a marker
file (``builtins.open(marker, "w")``, the same mechanism a real exploit uses to run anything).
A control shows the file really is live: plain ``pickle`` / ``torch.load(weights_only=False)``
does create the marker. Then each library path must refuse it with a clear error and the
marker must never appear.
"""

import json
import pickle
from pathlib import Path

import pytest
import torch

from avblocks.audio import MelConfig, Vocoder
from avblocks.config import ConfigError
from avblocks.dit.stdit import STDiT
from avblocks.latent.mdsa import MDSA
from avblocks.saveload import CheckpointError
from recipes.common import CheckpointManager
from recipes.common import distributed as D
from recipes.proav_dit import train_autoencoder, train_dit
from recipes.proav_dit.config import AutoencoderRecipe, DiTRecipe


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft_torch_file(path: Path, marker: Path) -> Path:
    torch.save({"model": {"weight": torch.zeros(2)}, "step": 1, "x": _Payload(marker)}, path)
    return path


def craft_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(_Payload(marker)))
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


def test_control_the_crafted_files_really_run_code(tmp_path, marker):
    torch.load(craft_torch_file(tmp_path / "a.pt", marker), weights_only=False)
    assert marker.exists()
    marker.unlink()
    pickle.loads(craft_pickle(tmp_path / "b.pkl", marker).read_bytes())
    assert marker.exists()


def test_checkpoint_manager_refuses_a_code_carrying_checkpoint(tmp_path, marker):
    craft_torch_file(tmp_path / "step_00000001.pt", marker)
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        CheckpointManager(tmp_path).load_latest()
    assert not marker.exists()


def test_trainer_resume_refuses_a_code_carrying_checkpoint(tmp_path, marker):
    (tmp_path / "checkpoints").mkdir()
    craft_torch_file(tmp_path / "checkpoints" / "step_00000002.pt", marker)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        train_autoencoder.main([
            "data.num_clips=2", "data.num_frames=8", "data.size=16", "model.hidden_channels=16",
            "model.latent_channels=4", "model.depth=1", "model.heads=2", "model.groups=2",
            "optim.steps=4", "optim.warmup=1", "optim.batch_size=2", "run.progress=false",
            f"run.output_dir={tmp_path}"])
    assert not marker.exists()


@pytest.mark.parametrize("module", ["stdit", "mdsa"])
def test_from_pretrained_reads_safetensors_only(tmp_path, marker, module):
    model = (STDiT(in_channels=2, side=4, frames=6, patch=2, hidden_size=16, depth=1, num_heads=2,
                   num_classes=2) if module == "stdit"
             else MDSA(hidden_channels=16, latent_channels=2, depth=1, heads=2, groups=2))
    cls = type(model)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    # a pickle posing as the weights file
    craft_torch_file(weights, marker)
    with pytest.raises(Exception, match=r"(?i)header|safetensor|deserializ") as info:
        cls.from_pretrained(tmp_path)
    assert not isinstance(info.value, pickle.UnpicklingError)  # never reached an unpickler
    # no safetensors file, a pickled pytorch_model.bin next to it: no fallback to pickle
    weights.unlink()
    craft_torch_file(tmp_path / "pytorch_model.bin", marker)
    with pytest.raises(CheckpointError, match="model.safetensors does not exist"):
        cls.from_pretrained(tmp_path)
    assert not marker.exists()


def test_vocoder_from_dir_refuses_a_code_carrying_pytorch_model_bin(tmp_path, marker):
    vocoder = Vocoder.from_config(mel=MelConfig.vocos(), dim=32, intermediate_dim=64, num_layers=1)
    vocoder.save_dir(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    state = dict(vocoder.vocos.state_dict())
    state["backbone.payload"] = _Payload(marker)  # one poisoned entry among real weights
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        Vocoder.from_dir(tmp_path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_sharded_checkpoint_reader_refuses_crafted_metadata(tmp_path, marker):
    import torch.distributed.checkpoint as dcp

    model = torch.nn.Linear(3, 2)
    D.save_sharded(tmp_path, 1, {"model": model.state_dict()})
    folder = D.latest_sharded(tmp_path)
    loaded = D.load_sharded(folder, {"model": torch.nn.Linear(3, 2).state_dict()})["model"]
    assert torch.equal(loaded["weight"], model.weight.detach())  # the honest file loads
    craft_pickle(folder / ".metadata", marker)
    with pytest.raises(D.UnsafeCheckpointError, match=r"names (io|builtins)\.open"):
        D.load_sharded(folder, {"model": torch.nn.Linear(3, 2).state_dict()})
    assert not marker.exists()
    # stock DCP would have run it: this is the hole SafeFileSystemReader closes
    with pytest.raises(BaseException):  # noqa: B017 (DCP wraps errors in a BaseException)
        dcp.load({"model": torch.nn.Linear(3, 2).state_dict()}, checkpoint_id=folder)
    assert marker.exists()


def test_torchscript_features_refuse_a_plain_pickle(tmp_path, marker):
    from avblocks.metrics.torchscript_features import TorchScriptFeatures

    with pytest.raises(ValueError, match="not a TorchScript archive"):
        TorchScriptFeatures(craft_torch_file(tmp_path / "net.pt", marker), modality="video")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# Configs: unknown keys, wrong types, impossible sizes; named, before anything is built
# ------------------------------------------------------------------------------------------

AE_OK = ["data.num_frames=8", "data.size=16", "model.hidden_channels=16", "model.heads=2",
         "model.groups=2", "optim.batch_size=2", "data.num_clips=4"]


def ae_config(*overrides: str) -> AutoencoderRecipe:
    from recipes.common.config import load_config

    return load_config(AutoencoderRecipe, None, [*AE_OK, *overrides])


@pytest.mark.parametrize("override, field", [
    ("model.unknown=1", "unknown"),
    ("data.sizee=16", "sizee"),
    ("model.heads=two", "AutoencoderRecipe.model.heads"),
    ("optim.lr=fast", "AutoencoderRecipe.optim.lr"),
    ("data.folder=3", "AutoencoderRecipe.data.folder"),
    ("model.video_patch=[1, 4]", "AutoencoderRecipe.model.video_patch"),
    ("run.on_nonfinite=ignore", "AutoencoderRecipe.run.on_nonfinite"),
    ("optim.steps=0", r"AutoencoderRecipe.optim.steps (0) must be >= 1"),
])
def test_unknown_keys_and_wrong_types_name_the_field(tmp_path, capsys, override, field):
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        train_autoencoder.main([*AE_OK, override, f"run.output_dir={out}"])
    assert field in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("override, message", [
    ("model.video_patch=[1, 3, 3]", r"model.video_patch\[1\] \(3\) must divide data.size \(16\)"),
    ("model.heads=3", r"model.heads \(3\) must divide model.hidden_channels \(16\)"),
    ("model.groups=3", r"model.groups \(3\) must divide the 8 latent frames"),
    ("model.block_frames=3", r"model.block_frames \(3\) must divide the 8 latent frames"),
    ("model.audio_patch=[1, 5, 2]", r"model.audio_patch\[1\] \(5\) must divide data.n_mels \(64\)"),
    ("model.audio_patch=[1, 4, 3]", r"model.audio_patch\[2\] \(3\) must divide the 10 spectrogram"),
    ("data.hop=300", r"data.hop \(300\).*sample_rate / \(fps \* hop\) = 16000 / \(8 \* 300\)"),
    ("optim.batch_size=8", r"optim.batch_size \(8\) must be <= data.num_clips \(4\)"),
    ("optim.grad_accum=4", r"optim.batch_size \(2\) must be divisible .* optim.grad_accum \(4\)"),
    ("model.video_patch=[2, 4, 4]", r"model.video_patch\[0\] \(2\) and model.audio_patch\[0\] \(1\)"),
    ("model.hidden_channels=12", r"model.hidden_channels \(12\) must be a multiple of the encoder's 8"),
])
def test_impossible_autoencoder_sizes_fail_naming_the_field(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train_autoencoder.validate(ae_config(override))
    out = tmp_path / "run"  # through the entry point: nothing built, nothing written
    with pytest.raises(ConfigError, match=message):
        train_autoencoder.main([*AE_OK, override, f"run.output_dir={out}"])
    assert not out.exists()


def test_validate_accepts_the_shipped_configs_and_checks_ranks(tmp_path):
    from recipes.common.config import load_config

    root = Path(__file__).resolve().parents[1] / "recipes" / "proav_dit" / "configs"
    train_autoencoder.validate(load_config(AutoencoderRecipe, root / "autoencoder_tiny.yaml"))
    run = tmp_path / "autoencoder"  # the denoiser's config names a trained autoencoder run
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    train_dit.validate(load_config(DiTRecipe, root / "dit_tiny.yaml", [f"autoencoder={run}"]))
    with pytest.raises(ConfigError, match=r"autoencoder \(.*missing\) must be a trained autoencoder run folder"):
        train_dit.validate(load_config(DiTRecipe, root / "dit_tiny.yaml", [f"autoencoder={tmp_path / 'missing'}"]))
    train_autoencoder.validate(ae_config())
    with pytest.raises(ConfigError, match=r"number of ranks \(4\)"):
        train_autoencoder.validate(ae_config(), world_size=4)


@pytest.mark.parametrize("override, message", [
    ("model.num_heads=3", r"model.num_heads \(3\) must divide model.hidden_size \(128\)"),
    ("model.hidden_size=130 model.num_heads=2", r"model.hidden_size \(130\) must be divisible by 4"),
    ("diffusion.p_audio_to_video=0.95", r"p_audio_to_video \+ diffusion.p_video_to_audio"),
])
def test_impossible_dit_sizes_fail_before_the_autoencoder_is_read(tmp_path, override, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):  # autoencoder= does not even exist
        train_dit.main([f"autoencoder={tmp_path / 'missing'}", *override.split(),
                        f"run.output_dir={out}"])
    assert not out.exists()


@pytest.mark.parametrize("override, message", [
    ("model.class_dropout=1.0", "DiTRecipe.model.class_dropout (1.0) must lie in [0, 1)"),
    ("model.patch=0", "DiTRecipe.model.patch (0) must be >= 1"),
])
def test_out_of_range_dit_fields_fail_when_the_config_is_read(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        train_dit.main([f"autoencoder={tmp_path / 'missing'}", override, f"run.output_dir={out}"])
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_config_json_with_a_wrong_type_names_the_field(tmp_path):
    model = STDiT(in_channels=2, side=4, frames=6, patch=2, hidden_size=16, depth=1, num_heads=2,
                  num_classes=2)
    model.save_pretrained(tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    payload["config"]["num_heads"] = "2"
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="num_heads"):
        STDiT.from_pretrained(tmp_path)
