import hashlib
import shutil

import numpy as np
import pytest

from metadiff_jax.data import datasets, glyph_render, glyphs

# sha256 of every split of kanjivg_glyphs/small 2.0.0 (images and class bounds), built with the pinned requirements.
GOLDEN_SMALL_SHA256 = "4c8363aabc77426b34cdb401b4f069ffd50571c47e694f919aa2e12382515478"


def split_digest(splits: dict) -> str:
    digest = hashlib.sha256()
    for name in datasets.SPLITS:
        digest.update(splits[name].images.tobytes())
        digest.update(splits[name].class_starts.tobytes())
    return digest.hexdigest()


def test_small_config_has_100_classes_split_64_16_20_with_20_drawers_each(small_builder, small_splits):
    rows = {row["split"]: row for row in datasets.summary(small_builder)}
    assert {s: (r["classes"], r["images"]) for s, r in rows.items()} == {
        "train": (64, 1280),
        "validation": (16, 320),
        "test": (20, 400),
    }
    for split in small_splits.values():
        assert split.image_shape == (28, 28, 1) and split.images.dtype == np.uint8
        assert np.all(split.class_sizes == 20)


def test_splits_hold_disjoint_characters_stored_with_the_dataset(small_builder):
    stored = small_builder.info.metadata["codepoints_by_split"]
    sets = [set(stored[name]) for name in datasets.SPLITS]
    assert sum(len(s) for s in sets) == len(set.union(*sets)) == 100
    assert small_builder.info.metadata["classes_by_split"]["test"] == [chr(c) for c in stored["test"]]


def test_split_is_grouped_by_class_in_label_order(small_builder, small_splits):
    source = small_builder.as_data_source(split="validation")
    split = small_splits["validation"]
    codepoints = small_builder.info.metadata["codepoints_by_split"]["validation"]
    for index in (0, 19, 20, 319):
        record = source[index]
        assert record["label"] == index // 20 and record["drawer"] == index % 20
        assert record["codepoint"] == codepoints[index // 20]
        np.testing.assert_array_equal(split.images[index], record["image"])


def test_stored_images_are_the_renders_of_their_characters(small_builder, small_splits):
    codepoint = small_builder.info.metadata["codepoints_by_split"]["test"][3]
    expected = glyph_render.render_character(str(glyph_render.kanjivg_dir()), codepoint, drawers=20, size=28, seed=0)
    split = small_splits["test"]
    np.testing.assert_array_equal(split.images[split.class_starts[3] : split.class_starts[4]], expected)


def test_rebuild_is_byte_identical_whatever_the_worker_count(small_splits, tmp_path):
    builder = datasets.build("kanjivg_glyphs", "small", tmp_path, workers=1)
    rebuilt = {name: datasets.load_split(builder, name, progress=False) for name in datasets.SPLITS}
    assert split_digest(rebuilt) == split_digest(small_splits)


def test_golden_digest_of_the_small_dataset(small_splits):
    # Pins the whole small dataset to the bytes built with the pinned requirements: the same builder
    # version and seed must give these arrays on any machine.
    assert split_digest(small_splits) == GOLDEN_SMALL_SHA256


def test_split_fractions_of_the_full_dataset():
    config = next(c for c in glyphs.KanjivgGlyphs.BUILDER_CONFIGS if c.name == "28px")
    split = glyphs.split_codepoints(config, glyph_render.list_codepoints(glyph_render.kanjivg_dir()))
    sizes = {name: len(codepoints) for name, codepoints in split.items()}
    assert sizes == {"train": 4290, "validation": 1072, "test": 1341}
    assert len(set().union(*split.values())) == 6703


def test_another_seed_gives_another_class_split():
    codepoints = glyph_render.list_codepoints(glyph_render.kanjivg_dir())
    first = glyphs.split_codepoints(glyphs.GlyphsConfig(name="a", num_classes=100, seed=0), codepoints)
    second = glyphs.split_codepoints(glyphs.GlyphsConfig(name="b", num_classes=100, seed=1), codepoints)
    assert first != second


def test_unknown_dataset_and_config_name_the_known_ones(tmp_path):
    with pytest.raises(datasets.DatasetError, match="Unknown dataset 'imagenet21k'.*kanjivg_glyphs"):
        datasets.make_builder("imagenet21k", None, tmp_path)
    with pytest.raises(datasets.DatasetError, match="no config '32px'.*28px, 84px, small"):
        datasets.make_builder("kanjivg_glyphs", "32px", tmp_path)


def test_missing_dataset_says_how_to_build_it(tmp_path):
    builder = datasets.make_builder("kanjivg_glyphs", "small", tmp_path)
    with pytest.raises(datasets.DatasetError, match="not built.*Build it with"):
        datasets.load_split(builder, "train")


def test_interrupted_build_is_named(tmp_path):
    builder = datasets.make_builder("kanjivg_glyphs", "small", tmp_path)
    leftover = tmp_path / "kanjivg_glyphs" / "small" / "incomplete.AB12CD_2.0.0"
    leftover.mkdir(parents=True)
    with pytest.raises(datasets.DatasetError, match="interrupted build was left in .*incomplete.AB12CD_2.0.0"):
        datasets.check_complete(builder)


@pytest.mark.parametrize("damage", ["delete", "truncate", "empty"])
def test_half_built_or_damaged_record_files_are_refused(small_data_dir, tmp_path, damage):
    shutil.copytree(small_data_dir, tmp_path, dirs_exist_ok=True)
    builder = datasets.make_builder("kanjivg_glyphs", "small", tmp_path)
    (record_file,) = builder.info.splits["train"].filepaths
    if damage == "delete":
        record_file.unlink()
    elif damage == "empty":
        record_file.write_bytes(b"")
    else:
        record_file.write_bytes(record_file.read_bytes()[:5000])
    with pytest.raises(datasets.DatasetError, match="(half-built or damaged|files are damaged).*build again"):
        datasets.load_split(builder, "train", progress=False)


def test_unknown_split_is_refused(small_builder):
    with pytest.raises(datasets.DatasetError, match="Unknown split 'val'"):
        datasets.load_split(small_builder, "val")
