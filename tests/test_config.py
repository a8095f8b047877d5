"""Tests for kpn.config: TOML presets, validation, overrides and the resolved-config dump."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from kpn.config import (
    BASE_KEY,
    Config,
    DataConfig,
    InferConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    load_config,
)
from kpn.errors import KpnError
from kpn.model.network import KPN
from kpn.model.summary import parameter_count

from conftest import assert_one_line_error

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PRESETS = sorted(CONFIGS.glob("*.toml"))


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------- presets


def test_the_four_presets_exist() -> None:
    names = {path.name for path in PRESETS}
    assert {"design.toml", "vkdt-2024-02.toml", "vkdt-head-w32.toml", "vkdt-head.toml"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads_and_builds(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, Config)
    model = KPN(config.model)
    assert sum(w.numel() for w in model.mlp.weights) == parameter_count(config.model)


def test_design_parameter_count() -> None:
    # star15_snr: 32 inputs; W = 64, 6 hidden layers, 16 outputs, no biases:
    # 64*32 (W0) + 5*64*64 (hidden) + 16*64 (W_out) = 2048 + 20480 + 1024 = 23552
    assert parameter_count(load_config(CONFIGS / "design.toml").model) == 23552
    # the W 32 network vkdt's kpn reads: 32*32 + 5*32*32 + 16*32 = 1024 + 5120 + 512
    assert parameter_count(load_config(CONFIGS / "photos-vkdt-w32.toml").model) == 6656


def test_vkdt_head_parameter_count() -> None:
    # patch8x8: 64 inputs; W = 64: 64*64 + 5*64*64 + 16*64 = 4096 + 20480 + 1024 = 25600
    assert parameter_count(load_config(CONFIGS / "vkdt-head.toml").model) == 25600


def test_design_is_the_default() -> None:
    """ModelConfig's defaults are the design's model, every key (W 64 included); the
    design's training settings are its own, not TrainConfig's vkdt defaults."""
    design = load_config(CONFIGS / "design.toml")
    assert design.model == ModelConfig() == Config().model
    assert ModelConfig().width == 64
    assert design.train != TrainConfig()


def test_vkdt_head_is_the_shipped_build() -> None:
    """docs/design.md §10: WIDTH 64 (patch8x8), APPLY_PLAIN, ALPHA_CONST, leaky relu, LOSS_SMAPE,
    PRE_MLP_DIFF with NO_ALIAS (binomial5, bilinear, detail, add), block transpose,
    levels >= 2 passed through, gradient stop, float16; trains 4 levels, infers 6."""
    config = load_config(CONFIGS / "vkdt-head.toml")
    assert config.model == ModelConfig(
        levels=4,
        down="binomial5",
        up="bilinear",
        mlp_input="detail",
        blend="add",
        features="patch8x8",
        noise_luminance="x",
        width=64,
        n_hidden=6,
        activation="leaky_relu",
        kernel_activation="plain",
        alpha_activation="const",
        denoise_levels=2,
        gradient_stop=True,
        block_transpose=True,
        vkdt_kernel_grad_untransposed=True,
        precision="vkdt-f16",
        vkdt_f16_backward=True,
        vkdt_plain_grad=True,
    )
    assert config.train.loss == "smape" and config.train.vkdt_smape_grad
    assert config.train.loss_reduction == "sum"
    # adam.comp and norm.comp as they are, kpn-t's parameter defaults, one tile per step
    assert config.train.vkdt_grad_clip and config.train.vkdt_bias_correction
    assert config.train.vkdt_f16_state and config.train.vkdt_f16_moments
    assert config.train.grad_scale == 128.0
    assert (config.train.lr, config.train.eps, config.train.l2) == (0.01, 1e-4, 0.001)
    assert (config.data.tile, config.data.batch, config.data.generate) == (64, 1, 2)
    assert config.infer.levels == 6


def test_vkdt_head_w32_differs_from_head_only_in_width_and_input() -> None:
    head = load_config(CONFIGS / "vkdt-head.toml")
    w32 = load_config(CONFIGS / "vkdt-head-w32.toml")
    assert dataclasses.replace(head.model, width=32, features="star15") == w32.model
    assert (head.train, head.infer) == (w32.train, w32.infer)


@pytest.mark.parametrize(
    "name", ["vkdt-head.toml", "vkdt-head-w32.toml", "vkdt-2024-02.toml", "photos-vkdt-w32.toml"]
)
def test_vkdt_presets_take_the_coopmat_path(name: str) -> None:
    """The presets' matrix path is the cooperative-matrix one, the default; the preset
    that makes a model vkdt-f16 names the switch in a comment."""
    assert load_config(CONFIGS / name).model.vkdt_matmul == "coopmat"
    path = CONFIGS / name
    while 'precision = "vkdt-f16"' not in path.read_text():
        path = CONFIGS / tomllib.loads(path.read_text())[BASE_KEY]
    assert 'vkdt_matmul "coopmat" (the default)' in path.read_text()
    fallback = apply_overrides(load_config(CONFIGS / name), ["model.vkdt_matmul=fallback"])
    assert fallback.model.vkdt_matmul == "fallback"


def test_vkdt_2024_has_no_transpose_and_softmax() -> None:
    """Before the KHR port (4c5e4782) the store was row-major; APPLY_SOFTMAX then."""
    model = load_config(CONFIGS / "vkdt-2024-02.toml").model
    assert (model.block_transpose, model.kernel_activation, model.width) == (False, "softmax", 32)


# ------------------------------------------------------------------- round trip


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_toml_round_trip_of_presets(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    assert load_config(write(tmp_path, config_to_toml(config))) == config


def test_toml_round_trip_of_non_defaults(tmp_path: Path) -> None:
    config = Config(
        model=ModelConfig(
            levels=7,
            down="box2_vkdt",
            up="bilinear",
            blend="post_diff",
            features="patch8x8",
            noise_luminance="lowpass",
            width=96,
            n_hidden=3,
            activation="none",
            kernel_activation="plain",
            alpha_activation="clamped",
            denoise_levels=3,
            gradient_stop=True,
            block_transpose=True,
            precision="vkdt-f16",
            vkdt_matmul="fallback",
            vkdt_head_layout=True,
        ),
        data=DataConfig(tile=128, batch=3),
        train=TrainConfig(loss="cosh", loss_reduction="sum"),
        infer=InferConfig(levels=9),
    )
    text = config_to_toml(config)
    assert "[model]" in text and "[infer]" in text
    assert "gradient_stop = true" in text  # TOML booleans, not Python's True
    assert load_config(write(tmp_path, text)) == config


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_partial_section_keeps_other_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[model]\nwidth = 32\n[infer]\nlevels = 6\n"))
    assert config.model == ModelConfig(width=32)
    assert config.infer.levels == 6
    assert config.train == TrainConfig()


# -------------------------------------------------------------------- bad files

BAD_FILES = {
    # name: (TOML text, words the one-line message must contain)
    "unknown-key": ("[model]\nwidht = 32\n", ["model.widht", "width"]),
    "unknown-section": ("[modle]\nwidth = 32\n", ["modle"]),
    "section-not-table": ("model = 3\n", ["model", "3"]),
    "width-string": ('[model]\nwidth = "32"\n', ["model.width", "'32'", "integer"]),
    "width-float": ("[model]\nwidth = 32.0\n", ["model.width", "32.0"]),
    "levels-float": ("[model]\nlevels = 4.5\n", ["model.levels", "4.5", "integer"]),
    "gradient-stop-int": ("[model]\ngradient_stop = 1\n", ["model.gradient_stop", "1", "true"]),
    "levels-bool": ("[model]\nlevels = true\n", ["model.levels", "True"]),
    "down-choice": ('[model]\ndown = "box3"\n', ["model.down", "'box3'", "'binomial5'"]),
    "loss-choice": ('[train]\nloss = "l1"\n', ["train.loss", "'l1'", "'smape'"]),
    "precision-choice": ('[model]\nprecision = "f16"\n', ["model.precision", "'f16'"]),
    "choice-not-string": ("[model]\nup = 1\n", ["model.up", "1"]),
    "width-not-multiple-of-16": ("[model]\nwidth = 40\n", ["model.width", "40", "16"]),
    "width-too-small": ("[model]\nwidth = 0\n", ["model.width", "0"]),
    "patch8x8-width-32": (
        '[model]\nfeatures = "patch8x8"\nwidth = 32\n',
        ["patch8x8", "model.width", "32"],
    ),
    "add-with-mip": ('[model]\nblend = "add"\n', ["model.blend", "'add'", "mlp_input"]),
    "mix-with-detail": ('[model]\nmlp_input = "detail"\n', ["model.blend", "'detail'"]),
    "levels-zero": ("[model]\nlevels = 0\n", ["model.levels", "0"]),
    "levels-17": ("[model]\nlevels = 17\n", ["model.levels", "17"]),
    "n-hidden-zero": ("[model]\nn_hidden = 0\n", ["model.n_hidden", "0"]),
    "denoise-negative": ("[model]\ndenoise_levels = -1\n", ["model.denoise_levels", "-1"]),
    "matmul-choice": ('[model]\nvkdt_matmul = "tensor"\n', ["model.vkdt_matmul", "'coopmat'"]),
    "fallback-without-f16": (
        '[model]\nvkdt_matmul = "fallback"\n',
        ["model.vkdt_matmul", "'fallback'", "model.precision = 'vkdt-f16'", "'fp32'"],
    ),
    "head-layout-w32": (
        "[model]\nvkdt_head_layout = true\nwidth = 32\n",
        ["model.vkdt_head_layout", "model.width > 32", "W = 32"],
    ),
    "guide-choice": ('[model]\nguide = "star"\n', ["model.guide", "'star'", "'centre'"]),
    "told-jitter-below-1": ("[data]\nnoise_told_jitter = 0.5\n", ["data.noise_told_jitter", "0.5"]),
    "told-jitter-above-4": ("[data]\nnoise_told_jitter = 8\n", ["data.noise_told_jitter", "1..4"]),
    "grain-negative": ("[data]\ngrain = -0.01\n", ["data.grain", "-0.01", "0..0.1"]),
    "grain-above-a-tenth": ("[data]\ngrain = 0.2\n", ["data.grain", "0.2", "0..0.1"]),
    "grain-without-noise": (
        "[data]\ngrain = 0.01\ngenerate = 1\n",
        ["data.grain", "synthetic noise", "data.generate 2 or 4"],
    ),
    "fine-passes-3": ("[model]\nfine_passes = 3\n", ["model.fine_passes", "3", "1 or 2"]),
    "chroma-f16": (
        '[model]\nchroma_kernel = true\nprecision = "vkdt-f16"\n',
        ["model.chroma_kernel", "float16"],
    ),
    "chroma-input-star15": (
        '[model]\nchroma_input = true\nfeatures = "star15"\n',
        ["model.chroma_input", "'star15_snr'", "'star15'"],
    ),
    "chroma-input-narrow": (
        "[model]\nchroma_input = true\nwidth = 48\n",
        ["model.chroma_input", "62", "model.width >= 62", "48"],
    ),
    "chroma-fine-passes-2": (
        "[model]\nchroma_kernel = true\nfine_passes = 2\n",
        ["model.chroma_kernel", "model.fine_passes = 1"],
    ),
    "post-diff-border-of-mix": (
        "[model]\nvkdt_post_diff_border = true\n",
        ["model.vkdt_post_diff_border", "'mix'"],
    ),
    "guide-star15": (
        '[model]\nguide = "centre"\nfeatures = "star15"\n',
        ["model.guide", "'star15_snr'", "'star15'"],
    ),
    "guide-detail": (
        '[model]\nguide = "centre"\nblend = "add"\nmlp_input = "detail"\n',
        ["model.guide", "model.mlp_input = 'mip'", "'detail'"],
    ),
    "guide-w32": (  # 32 star15_snr channels and 2 of the guide
        '[model]\nguide = "centre"\nwidth = 32\n',
        ["star15_snr' with model.guide = 'centre' has 34", "model.width >= 34", "32"],
    ),
    "tile-zero": ("[data]\ntile = 0\n", ["data.tile", "0"]),
    "infer-levels": ("[infer]\nlevels = 17\n", ["infer.levels", "17"]),
    "invalid-toml": ("[model\nwidth = 32\n", ["invalid TOML"]),
    "invalid-toml-value": ("[model]\nwidth = \n", ["invalid TOML"]),
}


@pytest.mark.parametrize(("text", "words"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(KpnError) as error:
        load_config(path)
    assert_one_line_error(error, path, *words)  # every message names the file


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(KpnError) as error:
        load_config(path)
    assert_one_line_error(error, path, "not found")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(KpnError) as error:
        load_config(tmp_path)
    assert_one_line_error(error, tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[model]\ndown = "b\xf6x2"\n')
    with pytest.raises(KpnError) as error:
        load_config(path)
    assert_one_line_error(error, path)


def test_config_from_dict_names_its_source() -> None:
    with pytest.raises(KpnError) as error:
        config_from_dict({"model": {"width": 33}}, "somewhere")
    assert_one_line_error(error, starts="somewhere: model.width = 33")


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().model.width = 64  # type: ignore[misc]


# -------------------------------------------------------------------- overrides


class TestOverrides:
    def test_int_bare_string_and_quoted_string(self) -> None:
        config = apply_overrides(
            Config(), ["model.width=32", "model.down=binomial5", 'train.loss="l2"']
        )
        assert config.model.width == 32 and isinstance(config.model.width, int)
        assert config.model.down == "binomial5"
        assert config.train.loss == "l2"
        # everything else untouched
        assert dataclasses.replace(config.model, width=64, down="box2") == ModelConfig()

    def test_bool_and_spaces(self) -> None:
        config = apply_overrides(Config(), [" model.gradient_stop = true "])
        assert config.model.gradient_stop is True

    def test_in_order_last_wins(self) -> None:
        config = apply_overrides(Config(), ["model.width=64", "model.width=48"])
        assert config.model.width == 48

    def test_pairs_validated_together(self) -> None:
        """blend and mlp_input change together; validation sees the final config."""
        config = apply_overrides(Config(), ["model.blend=add", "model.mlp_input=detail"])
        assert (config.model.blend, config.model.mlp_input) == ("add", "detail")

    def test_no_overrides_is_identity(self) -> None:
        config = load_config(CONFIGS / "vkdt-head.toml")
        assert apply_overrides(config, []) == config

    def test_input_config_unchanged(self) -> None:
        config = Config()
        apply_overrides(config, ["model.width=32"])
        assert config.model.width == 64

    @pytest.mark.parametrize(
        ("override", "words"),
        [
            ("model.width", ["model.width", "section.key=value"]),
            ("=64", ["section.key=value"]),
            ("model..width=64", ["section.key=value"]),
            ("model.widht=64", ["model.widht"]),
            ("modle.width=64", ["modle"]),
            ("model=3", ["model"]),
            ("model.width.x=3", ["width"]),
            ("model.width=abc", ["model.width", "'abc'"]),
            ("model.width=33", ["model.width", "33"]),
            ("model.width=32.0", ["model.width", "32.0"]),
            ("model.gradient_stop=yes", ["model.gradient_stop", "'yes'"]),
            ("model.down=box3", ["model.down", "'box3'"]),
            ("model.blend=add", ["model.blend", "mlp_input"]),
            ("model.features=patch8x8", ["patch8x8", "32"]),
        ],
    )
    def test_bad_override(self, override: str, words: list[str]) -> None:
        narrow = Config(model=ModelConfig(width=32))  # patch8x8's 64 inputs need W >= 64
        with pytest.raises(KpnError) as error:
            apply_overrides(narrow, [override])
        assert_one_line_error(error, *words)

    @pytest.mark.parametrize(
        ("override", "line"),
        [
            ("train.stpes=5", "--set train.stpes: no such setting; did you mean train.steps?"),
            ("trian.steps=5", "--set trian.steps: no such setting; did you mean train.steps?"),
            ("trian.stpes=5", "--set trian.stpes: no such setting; did you mean train.steps?"),
            ("stpes=5", "--set stpes: no such setting; did you mean train.steps?"),
            (
                "precison=f16",
                "--set precison: no such setting; did you mean "
                "model.precision, train.precision or infer.precision?",
            ),
            ("model.width.x=3", "--set model.width.x: no such setting; did you mean model.width?"),
            ("model.qqqqqq=1", "--set model.qqqqqq: no such setting"),
            ("qqqqqq.width=1", "--set qqqqqq.width: no such setting"),
            ("model=3", "--set model: a section, not a setting (expected section.key=value)"),
        ],
    )
    def test_unknown_setting_names_the_one_meant(self, override: str, line: str) -> None:
        """A mistyped section or key gets the setting closest to it, as a mistyped option
        gets its option; a name close to none gets no guess."""
        with pytest.raises(KpnError) as error:
            apply_overrides(Config(), [override])
        assert assert_one_line_error(error) == line


# --- base: presets that change only what differs --------------------------------------
def test_base_config_is_laid_under_the_file(tmp_path):
    (tmp_path / "base.toml").write_text(
        "[model]\nwidth = 64\nlevels = 3\n[train]\nlr = 0.5\nsteps = 7\n"
    )
    (tmp_path / "child.toml").write_text(
        'base = "base.toml"\n[model]\nlevels = 5\n[data]\nbatch = 3\n'
    )
    config = load_config(tmp_path / "child.toml")
    assert (config.model.width, config.model.levels) == (64, 5)
    assert (config.train.lr, config.train.steps, config.data.batch) == (0.5, 7, 3)


def test_base_chain_and_its_errors(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.toml").write_text("[model]\nwidth = 48\n")
    (tmp_path / "sub" / "b.toml").write_text('base = "../a.toml"\n[model]\nlevels = 2\n')
    (tmp_path / "c.toml").write_text('base = "sub/b.toml"\n')
    config = load_config(tmp_path / "c.toml")
    assert (config.model.width, config.model.levels) == (48, 2)
    (tmp_path / "loop.toml").write_text('base = "loop2.toml"\n')
    (tmp_path / "loop2.toml").write_text('base = "loop.toml"\n')
    with pytest.raises(KpnError, match="cycle"):
        load_config(tmp_path / "loop.toml")
    (tmp_path / "orphan.toml").write_text('base = "gone.toml"\n')
    with pytest.raises(KpnError, match=r"gone\.toml: config file not found \(base of .*orphan"):
        load_config(tmp_path / "orphan.toml")
    (tmp_path / "typo.toml").write_text('base = "a.toml"\n[model]\nwidht = 3\n')
    with pytest.raises(KpnError, match=r"unknown key 'model\.widht'"):
        load_config(tmp_path / "typo.toml")
    (tmp_path / "number.toml").write_text("base = 3\n")
    with pytest.raises(KpnError, match="must be a file name"):
        load_config(tmp_path / "number.toml")


def test_presets_inherit_the_design_model():
    design = load_config(CONFIGS / "design.toml").model
    for name in ("quick.toml", "long.toml", "photos.toml", "photos-tune.toml"):
        assert load_config(CONFIGS / name).model == design, name


def repeated_values(path: Path, root: str = "design.toml") -> list[str]:
    """The keys that a preset file writes with the value its base already resolves to (for
    ``root``, which names no base: the dataclasses' defaults); a preset other than
    ``root`` without a base is refused."""
    tables = tomllib.loads(path.read_text(encoding="utf-8"))
    base = tables.pop(BASE_KEY, None)
    if path.name == root:
        assert base is None, f"{root} is the root: it names no base"
        under = config_to_dict(Config())
    else:
        assert base is not None, f"{path.name} names no base"
        under = config_to_dict(load_config(path.parent / base))
    return [
        f"{section}.{key} = {value!r}"
        for section, values in tables.items()
        for key, value in values.items()
        if under[section][key] == value
    ]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_says_only_what_it_changes(path: Path) -> None:
    """The design is the root, on the dataclasses' defaults; every other preset names a
    base, and no preset writes a value that its base (or the defaults) already has."""
    assert repeated_values(path) == []


def test_repeated_values_are_found(tmp_path: Path) -> None:
    (tmp_path / "root.toml").write_text("[model]\nwidth = 32\nlevels = 4\n")
    (tmp_path / "child.toml").write_text(
        'base = "root.toml"\n[model]\nwidth = 32\nlevels = 3\n[train]\nsteps = 7\n'
    )
    assert repeated_values(tmp_path / "root.toml", "root.toml") == ["model.levels = 4"]
    assert repeated_values(tmp_path / "child.toml", "root.toml") == ["model.width = 32"]
    (tmp_path / "orphan.toml").write_text("[model]\nwidth = 48\n")
    with pytest.raises(AssertionError, match="names no base"):
        repeated_values(tmp_path / "orphan.toml", "root.toml")
