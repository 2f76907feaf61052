"""The standard benchmarks built from users' files: each format read, checked and converted (from small fake
files in the real formats), bad files named with their fix, random access from disk, and the paper configs."""

import json
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from configs import mini_imagenet_conv4, mini_imagenet_resnet12, tiered_imagenet_conv4, tiered_imagenet_resnet12
from launch import settings
from metadiff_jax import parallel
from metadiff_jax.data import cifar_fewshot, datasets, episodes, fake_files

ROOT = pathlib.Path(__file__).resolve().parent.parent


def build(tmp_path, name, config, manual, strict=False):
    builder = datasets.build(name, config, tmp_path / "tfds", manual=manual, strict=strict)
    return builder, {split: datasets.load_split(builder, split, progress=False) for split in datasets.SPLITS}


def class_image_sets(images: np.ndarray, labels: np.ndarray) -> list[set[bytes]]:
    return [{image.tobytes() for image in images[labels == c]} for c in np.unique(labels)]


def built_class_sets(split) -> list[set[bytes]]:
    return [{image.tobytes() for image in split.images[a:b]} for a, b in zip(split.class_starts[:-1], split.class_starts[1:])]


def test_mini_imagenet_pickles_convert_to_class_grouped_splits_holding_the_same_images(tmp_path):
    fake_files.mini_imagenet_pickles(tmp_path / "manual")
    builder, splits = build(tmp_path, "mini_imagenet", "pickle", tmp_path / "manual")
    for split, file in (("train", "train_phase_train"), ("validation", "val"), ("test", "test")):
        with open(tmp_path / "manual" / f"miniImageNet_category_split_{file}.pickle", "rb") as handle:
            content = pickle.load(handle)
        # Class c of a split is its c-th smallest label in the file, and holds exactly that label's images.
        assert built_class_sets(splits[split]) == class_image_sets(content["data"], np.array(content["labels"]))
        assert builder.info.metadata["classes_by_split"][split] == sorted(content["catname2label"])
    assert builder.info.metadata["official"] is False
    assert "600" in builder.info.metadata["differences_from_official"][0]


@pytest.mark.parametrize("imagenet_layout", [False, True], ids=["images_folder", "imagenet_train_folders"])
def test_mini_imagenet_csv_splits_read_and_resize_the_images_they_name(tmp_path, imagenet_layout):
    fake_files.mini_imagenet_csv(tmp_path / "manual", imagenet_layout=imagenet_layout)
    builder, splits = build(tmp_path, "mini_imagenet", "csv", tmp_path / "manual")
    assert [splits[s].num_classes for s in datasets.SPLITS] == [6, 5, 5]
    assert splits["train"].image_shape == (84, 84, 3) and builder.info.metadata["classes_by_split"]["validation"][0] == "n00000006"


def test_tiered_imagenet_streams_npz_files_and_reads_back_by_random_access(tmp_path):
    fake_files.tiered_imagenet_files(tmp_path / "manual")
    builder, splits = build(tmp_path, "tiered_imagenet", "84px", tmp_path / "manual")
    with np.load(tmp_path / "manual" / "val_images.npz") as npz, open(tmp_path / "manual" / "val_labels.pkl", "rb") as handle:
        assert built_class_sets(splits["validation"]) == class_image_sets(npz["images"], np.array(pickle.load(handle)["labels"]))
    assert builder.info.metadata["classes_by_split"]["validation"][0] == "class 6"
    on_disk = datasets.load_split(builder, "train", in_memory=False)
    assert isinstance(on_disk.images, datasets.RecordImages)
    np.testing.assert_array_equal(on_disk.class_starts, splits["train"].class_starts)
    np.testing.assert_array_equal(on_disk.images[5:9], splits["train"].images[5:9])
    spec = episodes.EpisodeSpec(5, 1, 3)
    from_disk = episodes.sample_episodes(on_disk, spec, seed=3, episode_ids=[0, 7])
    from_memory = episodes.sample_episodes(splits["train"], spec, seed=3, episode_ids=[0, 7])
    for disk_array, memory_array in zip(from_disk, from_memory):
        np.testing.assert_array_equal(disk_array, memory_array)


def test_cifar_fs_and_fc100_split_cifar100_by_class_and_by_superclass(tmp_path):
    fake_files.cifar100_tarball(tmp_path / "manual")
    _, cifar_fs = build(tmp_path, "cifar_fs", None, tmp_path / "manual")
    fc100_builder, fc100 = build(tmp_path, "fc100", None, tmp_path / "manual")
    assert [cifar_fs[s].num_classes for s in datasets.SPLITS] == [64, 16, 20]
    assert [fc100[s].num_classes for s in datasets.SPLITS] == [60, 20, 20]
    assert all(size == 6 for split in cifar_fs.values() for size in split.class_sizes)  # CIFAR-100's train + test images
    fine_names = sorted(n for names in cifar_fewshot.CIFAR_FS_CLASSES.values() for n in names)
    for split, superclasses in cifar_fewshot.FC100_SUPERCLASSES.items():
        names = fc100_builder.info.metadata["classes_by_split"][split]
        assert {fine_names.index(n) // 5 for n in names} == set(superclasses)  # the fake file's superclass of fine class i is i // 5


def test_omniglot_splits_by_alphabet_and_adds_rotations_as_classes(tmp_path):
    fake_files.omniglot_zips(tmp_path / "manual")
    plain_builder, plain = build(tmp_path, "omniglot", "28px", tmp_path / "manual")
    _, rotated = build(tmp_path, "omniglot", "28px_rotated", tmp_path / "manual")
    alphabet = lambda name: name.split("/")[0]
    classes = plain_builder.info.metadata["classes_by_split"]
    assert {alphabet(c) for c in classes["validation"]} == set(plain_builder.info.metadata["validation_alphabets"])
    assert not {alphabet(c) for c in classes["train"]} & {alphabet(c) for c in classes["validation"]}
    assert all(alphabet(c).startswith("evaluation") for c in classes["test"])
    assert [rotated[s].num_classes for s in datasets.SPLITS] == [4 * plain[s].num_classes for s in datasets.SPLITS]
    image = plain["test"].images[0]
    assert image.shape == (28, 28, 1) and image.mean() < 128  # white ink on black, like the glyph dataset
    np.testing.assert_array_equal(rotated["test"].images[rotated["test"].class_starts[1]], np.rot90(image, 1))


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("mini_imagenet", fake_files.mini_imagenet_pickles, "images of class n00000000: 16, where the official release has 600"),
        ("cifar_fs", fake_files.cifar100_tarball, "not the official release's eb9058c3a382ffc7106e4002c42a8d85"),
        ("omniglot", fake_files.omniglot_zips, "not the official release's 68d2efa1b9178cc56df9314c21c6e718"),
    ],
)
def test_strict_mode_refuses_unofficial_files_and_says_how_to_build_anyway(tmp_path, name, make, message):
    make(tmp_path / "manual")
    with pytest.raises(datasets.DatasetError, match="strict=False") as error:
        build(tmp_path, name, None, tmp_path / "manual", strict=True)
    assert message in str(error.value)
    assert not datasets.make_builder(name, None, tmp_path / "tfds", strict=False).is_prepared()


def _html(path: pathlib.Path) -> None:
    path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>Too many users</body></html>")


def _truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_shape(path: pathlib.Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"data": np.zeros((4, 32, 32, 3), np.uint8), "labels": [0, 1, 2, 3]}, handle)


@pytest.mark.parametrize(
    "name, make, damaged, damage, message",
    [
        (
            "mini_imagenet",
            fake_files.mini_imagenet_pickles,
            "miniImageNet_category_split_val.pickle",
            _html,
            "is an HTML page (Google Drive's quota or virus-scan page)",
        ),
        (
            "mini_imagenet",
            fake_files.mini_imagenet_pickles,
            "miniImageNet_category_split_val.pickle",
            pathlib.Path.unlink,
            "Missing miniImageNet_category_split_val.pickle",
        ),
        ("mini_imagenet", fake_files.mini_imagenet_pickles, "miniImageNet_category_split_test.pickle", _truncate, "is not a readable pickle"),
        (
            "mini_imagenet",
            fake_files.mini_imagenet_pickles,
            "miniImageNet_category_split_test.pickle",
            _wrong_shape,
            "'data' is uint8 (4, 32, 32, 3); expected uint8 (N, 84, 84, 3)",
        ),
        ("tiered_imagenet", fake_files.tiered_imagenet_files, "test_images.npz", _truncate, "test_images.npz"),
        ("tiered_imagenet", fake_files.tiered_imagenet_files, "val_labels.pkl", _html, "val_labels.pkl"),
        ("cifar_fs", fake_files.cifar100_tarball, "cifar-100-python.tar.gz", _truncate, "is not a readable .tar.gz"),
        ("omniglot", fake_files.omniglot_zips, "images_evaluation.zip", _truncate, "images_evaluation.zip is not a readable zip file"),
    ],
)
def test_a_bad_user_file_is_named_with_what_is_wrong_and_where_the_right_one_goes(tmp_path, name, make, damaged, damage, message):
    manual = tmp_path / "manual"
    make(manual)
    damage(manual / damaged)
    with pytest.raises(datasets.DatasetError) as error:
        build(tmp_path, name, None, manual)
    assert message in str(error.value)
    assert str(manual) in str(error.value)  # where the file goes
    assert not datasets.make_builder(name, None, tmp_path / "tfds", strict=False).is_prepared()


def test_an_empty_manual_folder_is_a_clear_error(tmp_path):
    (tmp_path / "manual").mkdir()
    with pytest.raises(datasets.DatasetError, match="tieredImageNet files"):
        build(tmp_path, "tiered_imagenet", None, tmp_path / "manual")


def test_paper_configs_carry_the_reference_protocol():
    for module, dataset, backbone in [
        (mini_imagenet_resnet12, "mini_imagenet", "resnet12"),
        (mini_imagenet_conv4, "mini_imagenet", "conv4"),
        (tiered_imagenet_resnet12, "tiered_imagenet", "resnet12"),
        (tiered_imagenet_conv4, "tiered_imagenet", "conv4"),
    ]:
        config = module.get_config()
        assert (config.dataset.name, config.backbone.name, config.backbone.width) == (dataset, backbone, 0)
        m = config.metadiff
        assert (m.timesteps, m.batch_size, m.learning_rate, m.weight_decay, m.ema_decay, m.tcunet.condition) == (1000, 8, 1e-4, 5e-4, 0.9999, "gradient")
        assert (config.pretrain.epochs, config.pretrain.batch_size, config.episodes.test_episodes, config.dataset.strict) == (100, 128, 600, True)
        assert config.dataset.in_memory == (dataset == "mini_imagenet")
        with pytest.raises(ValueError, match="quick"):
            module.get_config("fast")
        settings.validate(module.get_config("quick"), {}, parallel.make_mesh())  # every settings object builds


@pytest.fixture(scope="module")
def fake_manual_dir(tmp_path_factory) -> pathlib.Path:
    manual = tmp_path_factory.mktemp("manual")
    fake_files.mini_imagenet_pickles(manual)
    fake_files.tiered_imagenet_files(manual)
    return manual


# mini_imagenet_resnet12 runs in tests/test_device_script.py (benchmarks.device's dry run, on fake pickles at
# 84 px). The other two pairings with a miniImageNet or ResNet-12 half are left out (the suite's time): their
# data path and backbone run there, Conv-4 at 84 px in the tiered row, and their quick configs are validated above.
@pytest.mark.parametrize("config_file", ["tiered_imagenet_conv4"])
def test_quick_variant_of_each_paper_config_runs_end_to_end_on_fake_files(tmp_path, fake_manual_dir, config_file):
    workdir = tmp_path / "run"
    # One of them also trains with the query loss through the sampler (metadiff_jax/query_loss.py).
    query_loss = ["--config.metadiff.query_loss.weight=0.1", "--config.metadiff.query_loss.steps=3"] if config_file == "tiered_imagenet_conv4" else []
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.main",
            "--config",
            f"configs/{config_file}.py:quick",
            "--workdir",
            str(workdir),
            f"--config.dataset.data_dir={tmp_path / 'tfds'}",
            f"--config.dataset.manual_dir={fake_manual_dir}",
            *query_loss,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "[dataset] NOT the official release" in completed.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["dataset"].startswith(config_file.rsplit("_", 1)[0])
    methods = ("prototypes", "prototypes_power", "logistic", "finetuned", "ridge", "anil_features", "regressor", "metadiff")
    assert {(r["method"], r["shots"], r["episodes"]) for r in results["results"]} == {(m, 1, 10) for m in methods}
