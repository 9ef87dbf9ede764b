"""Config loading: _base_ inheritance, overrides, validation errors that name the problem."""
from pathlib import Path

import pytest
import yaml

from utils.config import apply_override, load_config, merge
from utils.registry import ConfigError, Registry

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def test_base_merge_and_override(tmp_path):
    write(tmp_path / "base.yaml", {"head": {"type": "ArcFace", "margin": 0.35, "scale": 32.0},
                                   "optim": {"type": "SGD", "lr": 0.1}})
    child = write(tmp_path / "child.yaml", {"_base_": "base.yaml", "head": {"margin": 0.5}})
    cfg = load_config(child, ["optim.lr=0.01", "head.scale=64"])
    assert cfg["head"] == {"type": "ArcFace", "margin": 0.5, "scale": 64}
    assert cfg["optim"]["lr"] == pytest.approx(0.01)


def test_type_change_replaces_section():
    merged = merge({"head": {"type": "ArcFace", "margin": 0.35}}, {"head": {"type": "CosFace", "scale": 30}})
    assert merged["head"] == {"type": "CosFace", "scale": 30}


def test_unknown_override_key_is_an_error_unless_added():
    cfg = {"optim": {"lr": 0.1}}
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'"):
        apply_override(cfg, "optim.lrr=0.2")
    apply_override(cfg, "+optim.nesterov=true")
    assert cfg["optim"]["nesterov"] is True


def test_unknown_section_and_base_cycle(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"modle": {"type": "X"}})
    with pytest.raises(ConfigError, match="unknown top-level section.*modle"):
        load_config(bad)
    write(tmp_path / "grand.yaml", {"optim": {"lr": 0.1}})
    write(tmp_path / "base.yaml", {"_base_": "grand.yaml", "optim": {"momentum": 0.9}})
    child = write(tmp_path / "child.yaml", {"_base_": "base.yaml"})
    assert load_config(child)["optim"] == {"lr": 0.1, "momentum": 0.9}  # bases may have bases
    write(tmp_path / "grand.yaml", {"_base_": "child.yaml"})
    with pytest.raises(ConfigError, match=r"_base_ cycle: .*child.yaml -> .*base.yaml -> .*grand.yaml -> .*child"):
        load_config(child)


def test_registry_errors_name_type_and_keys():
    registry = Registry("thing")

    @registry.register()
    class Widget:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    assert registry.build({"type": "Widget", "size": 3}).size == 3
    with pytest.raises(ConfigError, match="unknown thing type 'Gadget'.*Widget"):
        registry.build({"type": "Gadget"})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['colour'\]"):
        registry.build({"type": "Widget", "colour": "red"})


SECTION_PRESET_DIRS = {"_base_", "backbone", "head", "data"}  # section fragments (tests/test_config_compose.py)


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")
                                        if not SECTION_PRESET_DIRS & set(p.relative_to(REPO / "configs").parts)))
def test_every_experiment_preset_loads(path):
    cfg = load_config(REPO / path)
    for section in ("data", "backbone", "head", "training_mode", "optim", "schedule"):
        assert section in cfg, f"{path}: missing section {section}"
